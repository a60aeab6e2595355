"""manage.py bench: the table, and figures that agree with the mock upstream's configured delays."""

import re
import subprocess
import sys

import pytest
from django.core.management import CommandError, call_command

from tests.gateway.conftest import ROOT, server_env

TTFT_MS, GAP_MS, TOKENS = 300, 80, 10
PACED = f"mock/gpt-4.1-mini+ttft={TTFT_MS}+gap={GAP_MS}+tokens={TOKENS}"


def p50(table, label):
    """Return the streaming and non-streaming p50s of one row of the table."""
    row = next(line for line in table.splitlines() if line.startswith(label))
    cells = re.split(r"\s{2,}", row.strip())
    return float(cells[1].replace(",", "")), (None if cells[4] == "-" else float(cells[4].replace(",", "")))


def test_it_prints_figures_that_agree_with_the_upstream_pace(orm, database, mock_upstream):
    from billing.models import UsageRecord

    env = server_env(database, mock_upstream.base_url)
    env["CHAT_MODELS"] = PACED
    before = UsageRecord.objects.filter(channel="bench").count()
    # Run on a loaded 2-core machine: delays of 300 ms and 80 ms keep scheduling noise (a few ms a wake-up,
    # adding up over a reply) well inside 10 %.
    result = subprocess.run(
        [sys.executable, "manage.py", "bench", "--model", PACED, "--requests", "6", "--concurrency", "2"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    table = result.stdout
    streamed_ttft, whole_ttft = p50(table, "TTFT")
    streamed_itl, whole_itl = p50(table, "ITL")
    streamed_tpot, _ = p50(table, "TPOT")
    assert abs(streamed_ttft - TTFT_MS) <= TTFT_MS * 0.10, table
    assert abs(streamed_itl - GAP_MS) <= GAP_MS * 0.10, table
    assert abs(streamed_tpot - GAP_MS) <= GAP_MS * 0.10, table
    whole_reply = TTFT_MS + GAP_MS * (TOKENS - 1)
    assert abs(whole_ttft - whole_reply) <= whole_reply * 0.10 and whole_itl is None, table
    assert re.search(r"^errors\s+0\s+0$", table, re.M) and "sooner" in table
    assert UsageRecord.objects.filter(channel="bench").count() - before == 2 * 6 + 1  # and the warm-up


@pytest.mark.django_db
def test_it_refuses_a_model_that_is_not_configured(settings):
    settings.CHAT_MODELS = ["demo/assistant"]
    with pytest.raises(CommandError, match="'openai/gpt-9' is not in CHAT_MODELS: one of demo/assistant"):
        call_command("bench", "--model", "openai/gpt-9")


@pytest.mark.django_db(transaction=True)
def test_it_reports_json_with_both_modes(settings, capsys):
    import json

    from billing.models import UsageRecord

    settings.CHAT_MODELS = ["demo/assistant"]
    call_command("bench", "--model", "demo/assistant", "--requests", "3", "--concurrency", "2", "--format", "json")
    report = json.loads(capsys.readouterr().out)
    streamed, whole = report["modes"]["streaming"], report["modes"]["non_streaming"]
    assert set(streamed["ttft_ms"]) == {"mean", "p50", "p95", "p99"} and streamed["itl_ms"]["p50"] >= 0
    assert whole["itl_ms"] is None and whole["tpot_ms"] is None and whole["errors"] == 0
    assert streamed["output_tokens"] > 0 and report["gain"]["ms_sooner"] is not None
    assert UsageRecord.objects.filter(channel="bench").count() == 7


def test_it_interpolates_percentiles_as_numpy_does():
    from gateway.bench import percentile

    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([10, 20, 30, 40, 50], 95) == pytest.approx(48)
    assert percentile([7], 99) == 7
