"""What a streamed /v1/chat/completions costs daphne's CPU: the ASGI handler against an async Django view.

    .venv/bin/python bench/endpoint_cost.py [--requests 200] [--concurrency 10] [--tokens 200] [--rounds 3]

Two daphne processes on the same SQLite file and the same mock upstream (a subprocess): one serves
chatsite.asgi (gateway/endpoint.py at /v1/), the other bench.django_gateway (the same work as a
Django view). Each round sends, to each server in turn, `--requests` streamed requests for a
1-token reply and as many for a `--tokens` reply, `--concurrency` at a time, and reads the server's
CPU (utime + stime from /proc) around each batch. Per request = the 1-token batch's CPU / requests;
per relayed event = (long batch - short batch) / (events in long batch - events in short batch),
events counted by the client. Prints the medians over rounds.
"""

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.servers import DAPHNE, PYTHON, ROOT, cpu_seconds, free_port, wait_port  # noqa: E402

SHORT, LONG = "mock/short+ttft=0+gap=1+tokens=1", "mock/long+ttft=0+gap=1+tokens="
VARIANTS = {"asgi handler": "chatsite.asgi:application", "django view": "bench.django_gateway:application"}


def environment(database, mock_port, tokens):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHAT_", "MOCK", "DJANGO_", "REDIS"))}
    env.update(
        SECRET_KEY="bench", DATABASE_URL=f"sqlite:///{database}", LOG_LEVEL="WARNING", PYTHONPATH=str(ROOT),
        CHAT_MODELS=f"{SHORT},{LONG}{tokens}",
        MOCK_BASE_URL=f"http://127.0.0.1:{mock_port}/v1", MOCK_API_KEY="bench",
    )
    return env


async def batch(url, key, model, requests, concurrency):
    """Send `requests` streamed requests; return the content events received."""
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    headers = {"Authorization": f"Bearer {key}"}
    left, events = [requests], [0]
    async with httpx.AsyncClient(timeout=60) as client:
        async def worker():
            while left[0] > 0:
                left[0] -= 1
                async with client.stream("POST", url + "/v1/chat/completions", json=body, headers=headers) as response:
                    response.raise_for_status()
                    async for line in response.aiter_lines():
                        if line.startswith("data: {") and '"content":' in line and '"role"' not in line:
                            events[0] += 1
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return events[0]


def measure(pid, url, key, model, requests, concurrency):
    """Return (daphne CPU seconds, events) for one batch."""
    before = cpu_seconds(pid)
    events = asyncio.run(batch(url, key, model, requests, concurrency))
    return cpu_seconds(pid) - before, events


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="endpoint-cost-"))
    mock_port = free_port()
    env = environment(workdir / "db.sqlite3", mock_port, args.tokens)
    processes = []
    try:
        mock = subprocess.Popen([PYTHON, "manage.py", "mock_upstream", "--port", str(mock_port)], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        processes.append(mock)
        subprocess.run([PYTHON, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
        key = subprocess.run([PYTHON, "manage.py", "apikey", "create", "--name", "bench"], cwd=ROOT, env=env,
                             check=True, capture_output=True, text=True).stdout.strip()
        servers = {}
        for name, app in VARIANTS.items():
            port = free_port()
            log = open(workdir / f"{name.replace(' ', '-')}.log", "wb")  # noqa: SIM115 - lives as long as the server
            server = subprocess.Popen([DAPHNE, "-b", "127.0.0.1", "-p", str(port), app], cwd=ROOT, env=env,
                                      stdout=log, stderr=subprocess.STDOUT)
            processes.append(server)
            wait_port(port, server)
            wait_port(mock_port, mock)
            servers[name] = (server.pid, f"http://127.0.0.1:{port}")
            measure(server.pid, servers[name][1], key, LONG + str(args.tokens), 20, 5)  # warm up
        results = {name: {"request_ms": [], "event_us": []} for name in VARIANTS}
        for _ in range(args.rounds):
            for name, (pid, url) in servers.items():
                short_cpu, short_events = measure(pid, url, key, SHORT, args.requests, args.concurrency)
                long_cpu, long_events = measure(pid, url, key, LONG + str(args.tokens), args.requests, args.concurrency)
                results[name]["request_ms"].append(short_cpu / args.requests * 1000)
                results[name]["event_us"].append((long_cpu - short_cpu) / (long_events - short_events) * 1e6)
        print(f"{args.rounds} rounds of {args.requests} streamed requests at concurrency {args.concurrency}, "
              f"1-token and {args.tokens}-token replies; daphne CPU (medians):")
        print(f"{'variant':14} {'per request (ms)':>17} {'per relayed event (us)':>23}")
        for name, figures in results.items():
            print(f"{name:14} {statistics.median(figures['request_ms']):17.2f} "
                  f"{statistics.median(figures['event_us']):23.1f}")
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(10)


if __name__ == "__main__":
    main()
