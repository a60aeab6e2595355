"""The streaming benchmark: the same model, streamed and not, through the relay, with vLLM's latency figures.

Definitions (vLLM's benchmark_serving): time to first token (TTFT) from sending the request to the
first text; end-to-end latency (E2E) to the last; inter-token latency (ITL) every gap between two
consecutive pieces of text, over all requests; time per output token (TPOT) per request,
(E2E - TTFT) / (output tokens - 1). A non-streamed reply arrives whole: its first text is its last,
so its TTFT is its E2E and it has no ITL or TPOT.
"""

import asyncio
import math
from dataclasses import dataclass, field

from chat.providers import Call, http
from chat.turns import usage_of
from gateway import accounting
from gateway.exchange import Exchange

PERCENTILES = (50, 95, 99)
MODES = ("streaming", "non_streaming")


@dataclass(slots=True)
class Sample:
    """One request's timings, in seconds, and its output tokens."""

    ttft: float | None = None
    e2e: float | None = None
    itls: list = field(default_factory=list)
    tokens: int = 0
    error: str = ""

    @property
    def tpot(self):
        if self.error or self.tokens < 2 or not self.itls:
            return None
        return (self.e2e - self.ttft) / (self.tokens - 1)


async def one(model, prompt, stream, max_tokens):
    """Send one request through the relay; return its Sample (its usage record is written, channel bench)."""
    call = Call(model=model, messages=[{"role": "user", "content": prompt}], stream=stream, max_tokens=max_tokens)
    exchange = Exchange(call)
    arrivals = []
    append = arrivals.append
    loop = asyncio.get_running_loop()

    async def deliver(text):
        append(loop.time())

    error = await exchange.run(deliver)
    await accounting.arecord(exchange, "bench")
    if error is not None or not arrivals:
        return Sample(error=str(error or "no text"))
    usage, _ = usage_of(call, False)
    return Sample(
        ttft=arrivals[0] - exchange.started, e2e=arrivals[-1] - exchange.started,
        itls=[b - a for a, b in zip(arrivals, arrivals[1:])], tokens=usage.completion_tokens,
    )


async def run_mode(model, prompt, stream, requests, concurrency, max_tokens):
    """Run `requests` requests, `concurrency` at a time; return (samples, wall seconds)."""
    loop = asyncio.get_running_loop()
    remaining = [requests]
    samples = []

    async def worker():
        while remaining[0] > 0:
            remaining[0] -= 1
            samples.append(await one(model, prompt, stream, max_tokens))

    started = loop.time()
    await asyncio.gather(*(worker() for _ in range(min(concurrency, requests))))
    return samples, loop.time() - started


async def run(model, prompt, requests, concurrency, max_tokens, warmup=1):
    """Run both modes one after the other; return the report (a dict, times in ms).

    `warmup` streamed requests go first, uncounted (recorded all the same): the first request of a
    process also pays for connecting and for importing the provider's code.
    """
    report = {"model": model, "requests": requests, "concurrency": concurrency, "prompt_chars": len(prompt),
              "max_tokens": max_tokens, "warmup": warmup, "modes": {}}
    try:
        for _ in range(warmup):
            await one(model, prompt, True, max_tokens)
        for mode in MODES:
            samples, wall = await run_mode(model, prompt, mode == "streaming", requests, concurrency, max_tokens)
            report["modes"][mode] = summarise(samples, wall)
    finally:
        await http.close_client()
    report["gain"] = gain(report["modes"])
    return report


def summarise(samples, wall):
    """Return one mode's figures: percentiles in ms, tokens, throughput, errors."""
    good = [s for s in samples if not s.error]
    tokens = sum(s.tokens for s in good)
    return {
        "ttft_ms": spread([s.ttft for s in good]),
        "e2e_ms": spread([s.e2e for s in good]),
        "itl_ms": spread([gap for s in good for gap in s.itls]),
        "tpot_ms": spread([s.tpot for s in good if s.tpot is not None]),
        "output_tokens": tokens,
        "output_tokens_per_s": round(tokens / wall, 1) if wall > 0 else None,
        "duration_s": round(wall, 3),
        "errors": len(samples) - len(good),
        "error_examples": sorted({s.error for s in samples if s.error})[:3],
    }


def spread(values):
    """Return mean and p50/p95/p99 of seconds, in ms (None when there are none)."""
    if not values:
        return None
    ordered = sorted(values)
    figures = {"mean": round(sum(ordered) / len(ordered) * 1000, 2)}
    for p in PERCENTILES:
        figures[f"p{p}"] = round(percentile(ordered, p) * 1000, 2)
    return figures


def percentile(ordered, p):
    """Return the p-th percentile of sorted values, interpolated linearly (numpy's default)."""
    position = (len(ordered) - 1) * p / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def gain(modes):
    """Return how much sooner streaming shows text than a whole reply (p50s), or None."""
    streamed, whole = modes["streaming"]["ttft_ms"], modes["non_streaming"]["ttft_ms"]
    if not streamed or not whole:
        return None
    return {
        "streaming_first_text_p50_ms": streamed["p50"],
        "non_streaming_first_text_p50_ms": whole["p50"],
        "ms_sooner": round(whole["p50"] - streamed["p50"], 2),
        "times_sooner": round(whole["p50"] / streamed["p50"], 2) if streamed["p50"] else None,
    }


def sentence(report):
    """Return the perceived-latency gain of streaming in plain words."""
    g = report["gain"]
    if g is None:
        return "No comparison: one of the modes had no successful request."
    streamed = report["modes"]["streaming"]
    return (f"Streaming shows the first text after {g['streaming_first_text_p50_ms']:,.0f} ms (p50) and the whole "
            f"reply after {streamed['e2e_ms']['p50']:,.0f} ms; without streaming nothing shows for "
            f"{g['non_streaming_first_text_p50_ms']:,.0f} ms. People see text {g['times_sooner']}x sooner "
            f"({g['ms_sooner']:,.0f} ms less waiting) with streaming.")
