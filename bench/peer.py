"""chatsite's OpenAI-compatible endpoint side by side with a LiteLLM proxy, in one run.

    .venv/bin/pip install -r bench/requirements.txt   # once: py-spy, and LiteLLM into .venv-bench (see there)
    .venv/bin/python bench/peer.py [--levels 1,50,200] [--gap-ms 20] [--tokens 200] [--repeat 3]

Both relays run as one process each (chatsite: `python -m chatsite.serve`, one daphne on SQLite;
LiteLLM: `litellm --num_workers 1`, no database), pointed at the same mock upstream, and the same
raw asyncio client (bench/client.py's `Upstream`: keep-alive HTTP/1.1, chunked SSE) sends the same
streamed chat completions to each, at each C, interleaved repeat by repeat. Reported per relay:
first-token overhead (the client's first token minus the mock's first write, same clock) p50/p95/p99,
the relay process's CPU per relayed token (CPU in the round / tokens, so per-request work is
included), and memory per open stream (peak RSS growth in the round / C). `direct` is the mock itself.
"""

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import client  # noqa: E402
from bench.rounds import model_name, percentile, sample_rss  # noqa: E402
from bench.servers import PYTHON, ROOT, cpu_seconds, free_port, http, rss_kb, wait_port  # noqa: E402

LITELLM = ROOT / ".venv-bench" / "bin" / "litellm"
LITELLM_CONFIG = """\
model_list:
  - model_name: "*"
    litellm_params:
      model: "openai/*"
      api_base: "{base}"
      api_key: "x"
litellm_settings:
  telemetry: false
"""


class Relay:
    """One relay process under test: its name, port, pid, and the key its endpoint wants."""

    def __init__(self, name, port, process, key="x", model_prefix=""):
        self.name, self.port, self.process, self.key, self.model_prefix = name, port, process, key, model_prefix


def start_litellm(workdir, mock_base, log):
    config = workdir / "litellm.yaml"
    config.write_text(LITELLM_CONFIG.format(base=mock_base))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "REDIS_URL", "LITELLM_"))}
    env.update(LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_LOG="ERROR", DISABLE_SCHEMA_UPDATE="True")
    process = subprocess.Popen([str(LITELLM), "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
                                "--num_workers", "1"], cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
    wait_port(port, process, timeout=180)
    return Relay("litellm", port, process)


async def one_round(relay, c, model, tokens, per_client, label, mock_port):
    """Run C connections × per_client requests through `relay` (None: the mock itself); return figures."""
    port = relay.port if relay else mock_port
    pid = relay.process.pid if relay else None
    await http(mock_port, "/mock/reset", "POST")
    conns = [await open_completions(port) for _ in range(c)]
    for conn in conns:
        conn.key = relay.key if relay else "x"
    cpu0 = cpu_seconds(pid) if pid else 0.0
    rss0 = rss_kb(pid) if pid else 0
    peak, stop = [rss0], asyncio.Event()
    sampler = asyncio.create_task(sample_rss([pid], peak, stop)) if pid else None
    reply_s = 0.05 + tokens * args.gap_ms / 1000
    done = []

    async def slot(i, conn):
        await asyncio.sleep(reply_s * i / c)
        for k in range(per_client):
            req = conn.send("127.0.0.1", port, f"{label}-{i}-{k}", (relay.model_prefix if relay else "") + model)
            try:
                await asyncio.wait_for(asyncio.shield(req.done), reply_s + 60)
            except TimeoutError:
                req.end("timeout", "timeout")
            done.append(req)

    start = time.monotonic()
    await asyncio.gather(*(slot(i, conn) for i, conn in enumerate(conns)))
    wall = time.monotonic() - start
    cpu = (cpu_seconds(pid) - cpu0) if pid else 0.0
    stop.set()
    if sampler:
        await sampler
    for conn in conns:
        await conn.close()
    log = {r["tag"]: r for r in (await http(mock_port, "/mock/stats"))["log"]}
    ttft = [(req.first_at - log[req.tag]["first_token_at"]) * 1000 for req in done
            if req.first_at and req.tag in log and log[req.tag]["first_token_at"]]
    received = sum(req.tokens for req in done)
    errors = sum(req.status != "completed" or req.tokens != tokens for req in done)
    return {"ttft": ttft, "cpu_us_per_token": cpu * 1e6 / max(received, 1), "tokens_per_s": received / wall,
            "kb_per_stream": (peak[0] - rss0) / c, "errors": errors, "requests": len(done)}


async def main():
    workdir = Path(tempfile.mkdtemp(prefix="bench-peer-"))
    log = open(workdir / "servers.log", "ab")
    mock_port = free_port()
    mock = subprocess.Popen([PYTHON, "bench/mock_server.py", "--port", str(mock_port), "--ttft-ms", "50"], cwd=ROOT,
                            stdout=log, stderr=subprocess.STDOUT)
    relays = []
    try:
        wait_port(mock_port, mock)
        mock_base = f"http://127.0.0.1:{mock_port}/v1"
        relays.append(start_litellm(workdir, mock_base, log))
        model = model_name(args.gap_ms, args.tokens)
        warm = model_name(args.gap_ms, 5)
        relays += start_chatsite(workdir, mock_base, log, [model, warm])
        for relay in relays:  # imports, pools and caches filled before anything is measured
            await one_round(relay, 10, warm, 5, 2, f"warm-{relay.name}", mock_port)
        results = {}
        for repeat in range(args.repeat):
            for c in args.levels:
                per_client = 8 if c == 1 else 3 if c <= 50 else 1
                for relay in [None, *relays]:
                    name = relay.name if relay else "direct"
                    res = await one_round(relay, c, model, args.tokens, per_client, f"{name}-c{c}-r{repeat}", mock_port)
                    print(time.strftime("%H:%M:%S"), name, f"C={c}", f"err={res['errors']}/{res['requests']}",
                          f"ttft+ p50={percentile(res['ttft'], 50)}", f"{res['cpu_us_per_token']:.0f} µs/token",
                          flush=True)
                    results.setdefault((name, c), []).append(res)
    finally:
        for relay in relays:
            relay.process.terminate()
            relay.process.wait(30)
        mock.terminate()
        mock.wait(10)
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    print(f"\n### chatsite vs LiteLLM, {args.repeat} repeat(s), {args.tokens}-token replies every {args.gap_ms:g} ms, "
          f"mock TTFT 50 ms; load average at the end {load}\n")
    print("| C | relay | requests | errors | first-token overhead p50 / p95 / p99 ms | CPU µs/token "
          "| KB per open stream | tokens/s |\n|---:|---|---:|---:|---|---:|---:|---:|")
    for (name, c), rs in results.items():
        ttft = [x for r in rs for x in r["ttft"]]
        p = [percentile(ttft, q) for q in (50, 95, 99)]
        pct = " / ".join("–" if v is None else f"{v:.2f}" for v in p)
        relay = name != "direct"
        print(f"| {c} | {name} | {sum(r['requests'] for r in rs)} | {sum(r['errors'] for r in rs)} | {pct} "
              f"| {statistics.median(r['cpu_us_per_token'] for r in rs):.0f} " if relay else
              f"| {c} | {name} | {sum(r['requests'] for r in rs)} | {sum(r['errors'] for r in rs)} | {pct} | – ", end="")
        print(f"| {statistics.median(r['kb_per_stream'] for r in rs):.1f} " if relay else "| – ", end="")
        print(f"| {statistics.median(r['tokens_per_s'] for r in rs):.0f} |")
    print(f"\nlogs in {workdir}")


def start_chatsite(workdir, mock_base, log, models):
    """Start chatsite (one process, SQLite) serving its OpenAI-compatible endpoint; [] if it has none."""
    if not (ROOT / "gateway").is_dir():
        print("chatsite has no OpenAI-compatible endpoint (gateway/) in this tree: LiteLLM alone", flush=True)
        return []
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "REDIS_URL", "CHAT_", "DJANGO_"))}
    env.update(SECRET_KEY="bench", DATABASE_URL=f"sqlite:///{workdir}/chatsite.sqlite3", CHAT_MODELS=",".join("mock/" + m for m in models),
               MOCK_BASE_URL=mock_base, MOCK_API_KEY="x", DJANGO_SETTINGS_MODULE="chatsite.settings",
               LOG_LEVEL="WARNING", CHAT_RATE_LIMIT="0", PYTHONUNBUFFERED="1")
    subprocess.run([PYTHON, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True,
                   stdout=log, stderr=subprocess.STDOUT)
    key = subprocess.run([PYTHON, "manage.py", "apikey", "create", "--name", "bench"], cwd=ROOT, env=env, check=True,
                         capture_output=True, text=True).stdout.strip()
    port = free_port()
    process = subprocess.Popen([PYTHON, "-m", "chatsite.serve", "-b", "127.0.0.1", "-p", str(port),
                                "chatsite.asgi:application"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    wait_port(port, process, timeout=60)
    return [Relay("chatsite", port, process, key=key, model_prefix="mock/")]


class Completions(client.Upstream):
    """bench/client.py's keep-alive SSE reader, counting the words in any relay's content deltas."""

    pending = b""

    def count(self, data):
        """Return the words in the content deltas this read completes (a read may end inside an event)."""
        self.pending += data
        end = self.pending.rfind(b"\n\n")
        if end < 0:
            return 0
        tokens = sum(text.count(b" ") for text in CONTENT.findall(self.pending, 0, end))
        self.pending = self.pending[end + 2:]
        return tokens

    def end_body(self):
        super().end_body()
        self.pending = b""


CONTENT = re.compile(rb'"content": ?"((?:[^"\\]|\\.)*)"')  # a delta's text: the mock's tokens are words + a space


async def open_completions(port):
    _, conn = await asyncio.get_running_loop().create_connection(Completions, "127.0.0.1", port)
    return conn


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", default="1,50,200", type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--gap-ms", type=float, default=20)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main())
