"""axe-core (vendored, tests/browser/vendor/) run in the page under test: the suite's accessibility auditor."""

from pathlib import Path

AXE = Path(__file__).resolve().parent / "vendor" / "axe-core-4.14.1" / "axe.min.js"
BLOCKING = ("serious", "critical")

RUN = """async () => {
  const results = await axe.run(document, { resultTypes: ["violations"] });
  return results.violations.map((v) => ({
    id: v.id, impact: v.impact, help: v.help,
    nodes: v.nodes.slice(0, 5).map((n) => n.target.join(" ")),
  }));
}"""


def violations(page):
    """Return axe-core's violations on the page as it is now, injecting axe first if needed."""
    if not page.evaluate("() => typeof window.axe === 'object'"):
        # Evaluated through the DevTools protocol, so the page's Content-Security-Policy (which
        # forbids inline and foreign scripts) does not apply: the site is audited as served.
        page.evaluate(AXE.read_text())
    return page.evaluate(RUN)


def assert_accessible(page, state, allowed=None):
    """Fail unless axe-core finds no serious or critical violation in `state` of the page.

    `allowed` maps an axe rule id to the reason it is excepted in this state.
    """
    allowed = allowed or {}
    found = [v for v in violations(page) if v["impact"] in BLOCKING and v["id"] not in allowed]
    assert not found, f"axe-core, {state}:\n" + "\n".join(
        f"  {v['impact']} {v['id']}: {v['help']} at {v['nodes']}" for v in found
    )
