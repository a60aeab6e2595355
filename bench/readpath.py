"""Microbenchmark of the upstream read path alone: CPU per token to read C streams from the mock.

    .venv/bin/python bench/readpath.py [--c 200] [--gap-ms 20] [--tokens 200] [--loops asyncio,uvloop]

Reads the same streams several ways in this process, each on a fresh event loop of each kind, in
interleaved rounds, and reports its CPU per token for each: `aiohttp`: chatsite's own provider
(`OpenAIProvider.stream` through the shared AsyncClient on httpx-aiohttp's transport, aiter_raw,
SSEDecoder, read_chunk); `aiohttp-orjson`: the same with orjson parsing each chunk (measured and
declined: `pip install orjson` first); `httpx`: the same provider on httpx's default transport
(httpcore, as before); `protocol`: a raw asyncio Protocol feeding the same SSEDecoder and read_chunk (one
wake-up per network read); `floor`: a raw Protocol that only counts bytes.
"""

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
os.environ.setdefault("SECRET_KEY", "bench")

from bench.servers import PYTHON, ROOT, cpu_seconds, free_port, wait_port  # noqa: E402


class Raw(asyncio.Protocol):
    """One streamed completion over a raw connection; `parse` decides how much work a read costs."""

    def __init__(self, done, parse):
        self.done, self.parse, self.head = done, parse, True
        self.call = self.decoder = None

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        if self.head:
            data = data.split(b"\r\n\r\n", 1)[1]
            self.head = False
        if self.parse:
            from chat.providers.openai import read_chunk

            for event in self.decoder.feed(data):
                if event.data != "[DONE]":
                    read_chunk(self.call, event.data)
        if data.endswith(b"\r\n0\r\n\r\n") and not self.done.done():
            self.done.set_result(None)
            self.transport.close()


async def one_raw(port, body, parse):
    from chat.providers import Call
    from chat.sse import SSEDecoder

    loop = asyncio.get_running_loop()
    done = loop.create_future()
    transport, proto = await loop.create_connection(lambda: Raw(done, parse), "127.0.0.1", port)
    proto.call, proto.decoder = Call(model="mock/x", messages=[]), SSEDecoder()
    transport.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%b" % (len(body), body))
    await done


async def one_httpx(provider, model, content):
    from chat.providers import Call

    call = Call(model="mock/" + model, messages=[{"role": "user", "content": content}], stream=True)
    async for _ in provider.stream(call):
        pass


async def run(way, c, model, port):
    import django
    import httpx

    django.setup()
    from chat.providers import http
    from chat.providers.openai import OpenAIProvider

    from chat.providers import openai

    # aiohttp-raw: the same transport read through httpx's aiter_raw (two async generators per read)
    openai.body = (lambda response: response.aiter_raw()) if way == "aiohttp-raw" else http.body
    # aiohttp-orjson: as shipped, but each chunk parsed by orjson (bench/requirements.txt) instead of json
    openai.json = types.SimpleNamespace(loads=__import__("orjson").loads) if way == "aiohttp-orjson" else json
    if way == "httpx":  # the default transport in the shared client's place
        http._clients[asyncio.get_running_loop()] = httpx.AsyncClient(
            timeout=httpx.Timeout(65, connect=10),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=16, keepalive_expiry=30),
        )

    provider = OpenAIProvider({"base_url": f"http://127.0.0.1:{port}/v1", "api_key": "x"})
    jobs = []
    for i in range(c):
        content = f"{way}-{i}-{time.time()}"
        if way in ("httpx", "aiohttp", "aiohttp-raw", "aiohttp-orjson"):
            jobs.append(one_httpx(provider, model, content))
        else:
            body = json.dumps({"model": model, "stream": True, "stream_options": {"include_usage": True},
                               "messages": [{"role": "user", "content": content}]}).encode()
            jobs.append(one_raw(port, body, way == "protocol"))
    start = cpu_seconds(os.getpid())
    await asyncio.gather(*jobs)
    cpu = cpu_seconds(os.getpid()) - start
    await http.close_client()
    return cpu


def loop_factory(kind):
    """Return a new event loop of `kind` (asyncio or uvloop)."""
    if kind == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--c", type=int, default=200)
    parser.add_argument("--gap-ms", type=float, default=20)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--ways", default="httpx,aiohttp,protocol,floor")
    parser.add_argument("--loops", default="asyncio,uvloop")
    args = parser.parse_args()
    port = free_port()
    mock = subprocess.Popen([PYTHON, "bench/mock_server.py", "--port", str(port)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, mock)
        model = f"bench+ttft=50+gap={args.gap_ms:g}+tokens={args.tokens}"
        results = {}
        for _ in range(args.repeat):
            for kind in args.loops.split(","):
                for way in args.ways.split(","):
                    with asyncio.Runner(loop_factory=lambda: loop_factory(kind)) as runner:
                        cpu = runner.run(run(way, args.c, model, port))
                    results.setdefault(f"{way} on {kind}", []).append(cpu * 1e6 / (args.c * args.tokens))
        with open("/proc/loadavg") as f:
            load = f.read().split()[0]
        print(f"| read path (C={args.c}, gap {args.gap_ms:g} ms, {args.tokens} tokens; load {load} at the end) "
              f"| client CPU µs/token, median of {args.repeat} (each) |\n|---|---:|")
        for way, values in results.items():
            each = ", ".join(f"{v:.0f}" for v in values)
            print(f"| {way} | {sorted(values)[len(values) // 2]:.0f} ({each}) |")
    finally:
        mock.terminate()
        mock.wait()


if __name__ == "__main__":
    main()
