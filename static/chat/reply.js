// A finished reply's extras: copy buttons on code blocks and the figures line.

const COPIED_MS = 1500;

// Return a cost in dollars with every significant digit ("0.0000156000" -> "$0.0000156").
export function costLabel(cost) {
  if (cost === null || cost === undefined) return "not priced";
  const [whole, fraction = ""] = String(cost).split(".");
  return `$${whole}.${fraction.replace(/0+$/, "").padEnd(2, "0")}`;
}

async function copy(text) {
  if (navigator.clipboard && window.isSecureContext) {
    await navigator.clipboard.writeText(text);
    return;
  }
  const area = document.createElement("textarea");
  area.value = text;
  area.setAttribute("readonly", "");
  area.style.position = "fixed";
  area.style.opacity = "0";
  document.body.append(area);
  area.select();
  const ok = document.execCommand("copy");
  area.remove();
  if (!ok) throw new Error("copy refused");
}

// Give every code block in `root` a Copy button; let keyboards reach what scrolls sideways.
export function decorateCode(root) {
  // A code block or table wider than the bubble scrolls: it must take focus to scroll by keys.
  root.querySelectorAll("pre, table").forEach((node) => node.setAttribute("tabindex", "0"));
  root.querySelectorAll("pre").forEach((pre) => {
    if (pre.parentElement.classList.contains("code-block")) return;
    const wrapper = document.createElement("div");
    wrapper.className = "code-block";
    pre.replaceWith(wrapper);
    const button = document.createElement("button");
    button.type = "button";
    button.className = "button small copy";
    button.textContent = "Copy";
    button.setAttribute("aria-label", "Copy code");
    button.addEventListener("click", async () => {
      try {
        await copy(pre.textContent);
        button.textContent = "Copied";
      } catch (err) {
        console.error("chat: copy failed", err);
        button.textContent = "Copy failed";
      }
      setTimeout(() => { button.textContent = "Copy"; }, COPIED_MS);
    });
    wrapper.append(button, pre);
  });
}

function figure(list, term, value) {
  const row = document.createElement("div");
  const dt = document.createElement("dt");
  const dd = document.createElement("dd");
  dt.textContent = term;
  dd.textContent = value;
  row.append(dt, dd);
  list.append(row);
}

// Return the figures of a `done` frame: model, first token, tokens, speed and cost.
export function figuresList(done, model, streamingSeconds) {
  const list = document.createElement("dl");
  list.className = "figures";
  const usage = done.usage || { prompt_tokens: 0, completion_tokens: 0, estimated: false };
  figure(list, "Model", model);
  if (done.ttft_ms !== null && done.ttft_ms !== undefined) figure(list, "First token", `${done.ttft_ms} ms`);
  const approx = usage.estimated ? "≈" : "";
  figure(list, "Tokens", `${approx}${usage.prompt_tokens} in · ${usage.completion_tokens} out`);
  if (usage.completion_tokens > 1 && streamingSeconds > 0.05) {
    figure(list, "Speed", `${(usage.completion_tokens / streamingSeconds).toFixed(1)} tok/s`);
  }
  figure(list, "Cost", costLabel(done.cost_usd));
  return list;
}
