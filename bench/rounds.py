"""One round of load: open C conversations, stream their replies (relay or direct), measure, close."""

import asyncio
import os
import time

from bench import client
from bench.servers import cpu_seconds, count_rows, http, rss_kb, system_busy

TABLES = ("chat_conversation", "chat_message", "billing_usagerecord", "billing_abandonmentevent", "django_session")
OPEN_AT_ONCE = 32  # handshakes in flight: daphne's listen backlog is 50


def model_name(gap_ms, tokens, ttft_ms=50):
    """Return the mock model name (options ride in it) for this pace and length."""
    return f"bench+ttft={ttft_ms:g}+gap={gap_ms:g}+tokens={tokens}"


def percentile(values, p):
    """Return the p-th percentile (nearest rank) of values, or None."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


class Round:
    """A round's settings: mode relay or direct, C conversations, pace, length, requests per conversation."""

    def __init__(self, mode, c, gap_ms, tokens, per_client, label, burst=False, timeout=None):
        self.mode, self.c, self.gap_ms, self.tokens, self.per_client = mode, c, gap_ms, tokens, per_client
        self.label, self.burst = label, burst
        self.reply_s = 0.05 + gap_ms / 1000 * max(tokens - 1, 0)
        self.timeout = timeout or self.reply_s + 60


async def open_all(rnd, servers):
    """Open C connections (websockets through chatsite, or HTTP to the mock), a few at a time."""
    gate = asyncio.Semaphore(OPEN_AT_ONCE)
    ports = servers.ports

    async def one(slot):
        async with gate:
            for attempt in range(3):
                try:
                    if rnd.mode == "direct":
                        return await client.open_upstream("127.0.0.1", servers.mock_port)
                    return await client.open_socket("127.0.0.1", ports[slot % len(ports)])
                except (OSError, TimeoutError) as exc:
                    error = exc
                    await asyncio.sleep(0.2 * (attempt + 1))
            return error

    return await asyncio.gather(*(one(slot) for slot in range(rnd.c)))


async def drive(rnd, conns, servers, model):
    """Send per_client requests on each connection, one after another; return the Requests."""
    done = []

    async def slot(i, conn):
        if not rnd.burst:
            await asyncio.sleep(rnd.reply_s * i / rnd.c)
        for k in range(rnd.per_client):
            tag = f"{rnd.label}-{i}-{k}"
            if rnd.mode == "direct":
                req = conn.send("127.0.0.1", servers.mock_port, tag, model)
            else:
                req = conn.send(tag, "mock/" + model)
            try:
                await asyncio.wait_for(asyncio.shield(req.done), rnd.timeout)
            except TimeoutError:
                req.end("timeout", "timeout")
            done.append(req)
            if req.status in ("timeout", "error") and req.error in ("timeout", "socket closed", "connection lost"):
                break

    await asyncio.gather(*(slot(i, conn) for i, conn in enumerate(conns)))
    return done


async def sample_rss(pids, peak, stop):
    """Keep the highest summed RSS of `pids` in peak[0] until `stop` is set."""
    while not stop.is_set():
        peak[0] = max(peak[0], sum(rss_kb(pid) for pid in pids))
        try:
            await asyncio.wait_for(stop.wait(), 0.1)
        except TimeoutError:
            pass


def snapshot(servers):
    """Return CPU seconds of daphne(s), the mock and this client, and the machine's busy time."""
    busy, total = system_busy()
    return {
        "daphne": sum(cpu_seconds(pid) for pid in servers.pids),
        "mock": cpu_seconds(servers.mock.pid),
        "client": cpu_seconds(os.getpid()),
        "busy": busy,
        "total": total,
        "wall": time.monotonic(),
    }


async def sql_counts(servers):
    """Return the summed SQL statement counts of the daphne processes (None without the counting app)."""
    if "counting_asgi" not in servers.asgi:
        return None
    totals = {"queries": 0, "writes": 0, "tables": {}}
    for port in servers.ports:
        stats = await http(port, "/__bench__/stats")
        totals["queries"] += stats["queries"]
        totals["writes"] += stats["writes"]
        for key, n in stats["tables"].items():
            totals["tables"][key] = totals["tables"].get(key, 0) + n
    return totals


def delta(after, before):
    return {k: after[k] - before[k] for k in before}


async def run_round(rnd, servers):
    """Run one round and return its measurements."""
    model = model_name(rnd.gap_ms, rnd.tokens)
    relay = rnd.mode == "relay"
    await http(servers.mock_port, "/mock/reset", "POST")
    rows0 = count_rows(servers.database_url, TABLES) if relay else None
    sql0 = await sql_counts(servers) if relay else None
    s0 = snapshot(servers)
    conns = await open_all(rnd, servers)
    failed_open = [c for c in conns if isinstance(c, BaseException)]
    conns = [c for c in conns if not isinstance(c, BaseException)]
    s1 = snapshot(servers)
    sql1 = await sql_counts(servers) if relay else None
    rss_before = sum(rss_kb(pid) for pid in servers.pids) if relay else 0
    peak, stop = [rss_before], asyncio.Event()
    sampler = asyncio.create_task(sample_rss(servers.pids, peak, stop)) if relay else None
    s2 = snapshot(servers)
    reqs = await drive(rnd, conns, servers, model)
    s3 = snapshot(servers)
    stop.set()
    if sampler:
        await sampler
    sql2 = await sql_counts(servers) if relay else None
    rows1 = count_rows(servers.database_url, TABLES) if relay else None
    await asyncio.gather(*(conn.close() for conn in conns))
    stats = await http(servers.mock_port, "/mock/stats")
    return measure(rnd, reqs, stats, failed_open, {
        "setup": delta(s1, s0), "stream": delta(s3, s2), "rss_before_kb": rss_before, "rss_peak_kb": peak[0],
        "sql_setup": sql_delta(sql1, sql0), "sql_stream": sql_delta(sql2, sql1),
        "rows": None if rows0 is None else {t: rows1[t] - rows0[t] for t in TABLES},
    })


def sql_delta(after, before):
    if after is None or before is None:
        return None
    tables = {k: n - before["tables"].get(k, 0) for k, n in after["tables"].items() if n - before["tables"].get(k, 0)}
    return {"queries": after["queries"] - before["queries"], "writes": after["writes"] - before["writes"],
            "tables": tables}


def measure(rnd, reqs, stats, failed_open, raw):
    """Return the round's figures: latencies against the mock's clock, rates, CPU, memory, writes."""
    log = {r["tag"]: r for r in stats.get("log", [])}
    ttft, ttft_at, late, errors, timeouts, frames, tokens = [], [], [], len(failed_open), 0, 0, 0
    kinds = {}
    for req in reqs:
        frames += len(req.frames)
        tokens += req.tokens
        if req.status == "timeout":
            timeouts += 1
        elif req.status != "completed" or req.tokens != rnd.tokens:
            errors += 1
            kind = req.error or f"tokens {req.tokens}"
            kinds[kind] = kinds.get(kind, 0) + 1
        upstream = log.get(req.tag)
        if upstream is None or upstream["first_token_at"] is None or req.first_at is None:
            continue
        ttft.append((req.first_at - upstream["first_token_at"]) * 1000)
        ttft_at.append(upstream["first_token_at"])  # when the mock wrote it (bench/first_token_tail.py)
        written = [t for t, n in upstream["writes"] for _ in range(n)]
        index = 0
        for arrived, n in req.frames:
            for sent_at in written[index: index + n]:
                late.append((arrived - sent_at) * 1000)
            index += n
    stream, setup = raw["stream"], raw["setup"]
    wall = stream["wall"]
    n = len(reqs) or 1
    machine = stream["busy"] - stream["daphne"] - stream["mock"] - stream["client"]
    result = {
        "mode": rnd.mode, "c": rnd.c, "gap_ms": rnd.gap_ms, "tokens": rnd.tokens, "label": rnd.label,
        "requests": len(reqs), "errors": errors, "timeouts": timeouts, "error_kinds": kinds,
        "ttft_overhead_ms": {p: percentile(ttft, p) for p in (50, 95, 99)},
        "token_lateness_ms": {p: percentile(late, p) for p in (50, 99)},
        "samples": {"ttft": len(ttft), "tokens": len(late)},
        "wall_s": wall, "frames_per_s": frames / wall, "tokens_per_s": tokens / wall,
        "frames": frames, "tokens_received": tokens,
        "cpu_ms_per_request": stream["daphne"] * 1000 / n,
        "cpu_ms_per_conversation_setup": setup["daphne"] * 1000 / max(rnd.c, 1),
        "cpu_cores": {"daphne": stream["daphne"] / wall, "mock": stream["mock"] / wall,
                      "client": stream["client"] / wall, "other": machine / wall},
        "rss_growth_kb_per_stream": (raw["rss_peak_kb"] - raw["rss_before_kb"]) / max(rnd.c, 1),
        "rss_before_kb": raw["rss_before_kb"], "rss_peak_kb": raw["rss_peak_kb"],
        "sql_writes_per_request": None if raw["sql_stream"] is None else raw["sql_stream"]["writes"] / n,
        "sql_queries_per_request": None if raw["sql_stream"] is None else raw["sql_stream"]["queries"] / n,
        "sql_stream": raw["sql_stream"], "sql_setup": raw["sql_setup"],
        "rows_per_request": None if raw["rows"] is None else {t: v / n for t, v in raw["rows"].items()},
    }
    result["_ttft"], result["_ttft_at"], result["_late"] = ttft, ttft_at, late
    return result
