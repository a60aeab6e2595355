"""Turn rounds into the summary: pooled latency percentiles, medians of rates and CPU, a markdown report."""

import platform
import statistics
import time

from bench.rounds import percentile

DISTURBED_CORES = 0.25  # CPU used by processes outside the rig during a round, in cores


def fmt(value, digits=1):
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def one_line(res):
    """Return a progress line for one round."""
    t, lat = res["ttft_overhead_ms"], res["token_lateness_ms"]
    return (f"{res['mode']:<16} C={res['c']:<4} gap={res['gap_ms']:<4} tok={res['tokens']:<3} "
            f"req={res['requests']:<4} err={res['errors']} to={res['timeouts']} "
            f"ttft+ p50={fmt(t[50], 2)} p99={fmt(t[99], 2)} ms  late p50={fmt(lat[50], 2)} p99={fmt(lat[99], 2)} ms  "
            f"{res['tokens_per_s']:.0f} tok/s  cpu {res['cpu_ms_per_request']:.2f} ms/req  "
            f"cores d={res['cpu_cores']['daphne']:.2f} m={res['cpu_cores']['mock']:.2f} "
            f"c={res['cpu_cores']['client']:.2f} o={res['cpu_cores']['other']:.2f}")


def group(rounds):
    """Return {(variant, mode, c, gap, tokens): [rounds]} in run order."""
    groups = {}
    for res in rounds:
        groups.setdefault((res["variant"], res["mode"], res["c"], res["gap_ms"], res["tokens"]), []).append(res)
    return groups


def aggregate(rs):
    """Return one row from the repeats of a round: pooled percentiles, medians of the rest."""
    ttft = [x for r in rs for x in r["_ttft"]]
    late = [x for r in rs for x in r["_late"]]
    cores = {k: median([r["cpu_cores"][k] for r in rs]) for k in ("daphne", "mock", "client", "other")}
    rows = None
    if rs[0]["rows_per_request"] is not None:
        rows = {t: median([r["rows_per_request"][t] for r in rs]) for t in rs[0]["rows_per_request"]}
    return {
        "mode": rs[0]["mode"], "c": rs[0]["c"], "gap_ms": rs[0]["gap_ms"], "tokens": rs[0]["tokens"],
        "rounds": len(rs), "requests": sum(r["requests"] for r in rs),
        "errors": sum(r["errors"] for r in rs), "timeouts": sum(r["timeouts"] for r in rs),
        "ttft_overhead_ms": {p: percentile(ttft, p) for p in (50, 95, 99)},
        "token_lateness_ms": {p: percentile(late, p) for p in (50, 99)},
        "frames_per_s": median([r["frames_per_s"] for r in rs]),
        "tokens_per_s": median([r["tokens_per_s"] for r in rs]),
        "cpu_ms_per_request": median([r["cpu_ms_per_request"] for r in rs]),
        "cpu_ms_per_request_all": [round(r["cpu_ms_per_request"], 3) for r in rs],
        "cpu_ms_per_conversation_setup": median([r["cpu_ms_per_conversation_setup"] for r in rs]),
        "rss_growth_kb_per_stream": median([r["rss_growth_kb_per_stream"] for r in rs]),
        "sql_writes_per_request": median([r["sql_writes_per_request"] for r in rs]),
        "sql_queries_per_request": median([r["sql_queries_per_request"] for r in rs]),
        "rows_per_request": rows,
        "cores": cores,
        "disturbed": [r["repeat"] for r in rs if r["cpu_cores"]["other"] > DISTURBED_CORES],
        "client_saturated": any(r["cpu_cores"]["client"] > 0.9 for r in rs),
    }


def build(rounds, extra, args):
    """Return the run's summary."""
    rows = {key: aggregate(rs) for key, rs in group(rounds).items()}
    levels = sorted({(k[2], k[3]) for k in rows if k[4] == args.tokens and k[0] in ("default", "-p2")})
    per_token = []
    for variant, mode in sorted({(k[0], k[1]) for k in rows if k[1] != "direct"}):
        for c, gap in levels:
            long, short = rows.get((variant, mode, c, gap, args.tokens)), rows.get((variant, mode, c, gap, 1))
            if not long or not short:
                continue
            pairs = [(a["cpu_ms_per_request"], b["cpu_ms_per_request"])
                     for a, b in zip(group_of(rounds, variant, mode, c, gap, args.tokens),
                                     group_of(rounds, variant, mode, c, gap, 1))]
            each = [(a - b) * 1000 / (args.tokens - 1) for a, b in pairs]
            per_token.append({
                "mode": mode, "c": c, "gap_ms": gap,
                "cpu_ms_per_request_1": short["cpu_ms_per_request"],
                "cpu_ms_per_request_n": long["cpu_ms_per_request"],
                "cpu_us_per_token": median(each), "cpu_us_per_token_each": [round(x, 1) for x in each],
                "setup_ms_per_conversation": median([short["cpu_ms_per_conversation_setup"],
                                                     long["cpu_ms_per_conversation_setup"]]),
                "sql_writes_1": short["sql_writes_per_request"], "sql_writes_n": long["sql_writes_per_request"],
                "rows_1": short["rows_per_request"], "rows_n": long["rows_per_request"],
            })
    return {"rows": {"|".join(map(str, k)): v for k, v in rows.items()}, "keys": list(rows), "levels": levels,
            "per_token": per_token, "extra": extra,
            "meta": {"when": time.strftime("%Y-%m-%d %H:%M:%S"), "python": platform.python_version(),
                     "commit": commit(),
                     "args": {k: v for k, v in vars(args).items()}}}


def commit():
    """Return the code under test: HEAD's short hash, with `+dirty` when tracked files outside bench/ changed."""
    import subprocess

    from bench.servers import ROOT

    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench",
                                ":!docs"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def group_of(rounds, variant, mode, c, gap, tokens):
    return sorted((r for r in rounds if (r["variant"], r["mode"], r["c"], r["gap_ms"], r["tokens"])
                   == (variant, mode, c, gap, tokens)), key=lambda r: r["repeat"])


def strip(summary, rounds, extra):
    """Return the summary and every round without the raw samples, for the JSON file."""
    clean = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rounds]
    if extra.get("hold"):
        extra["hold"] = {k: v for k, v in extra["hold"].items() if not k.startswith("_")}
    if extra.get("profile"):
        extra["profile"]["round"] = {k: v for k, v in extra["profile"]["round"].items() if not k.startswith("_")}
    return {**{k: v for k, v in summary.items() if k != "keys"}, "rounds": clean}


def diff(a, b):
    return None if a is None or b is None else a - b


def markdown(summary, args):
    """Return the report as markdown."""
    rows = {tuple(k): summary["rows"]["|".join(map(str, k))] for k in summary["keys"]}
    out = [f"### Relay vs direct — {summary['meta']['when']}, commit {summary['meta']['commit']}, "
           f"{args.repeat} repeat(s), "
           f"{args.tokens}-token replies, mock TTFT 50 ms"
           + (f", {args.processes} daphne processes on PostgreSQL + Redis" if args.processes > 1 else
              ", one daphne process on SQLite")
           + (f", patches: {', '.join(args.patch)}" if args.patch else ""), "",
           "| level | path | req | err | t/o | first-token overhead p50 / p95 / p99 ms | per-token delay p50 / p99 ms "
           "| added delay p50 / p99 ms | frames/s | tokens/s | server CPU ms/req | RSS KB/stream | SQL writes/req "
           "| cores daphne / mock / client / other |",
           "|---|---|---:|---:|---:|---|---|---|---:|---:|---:|---:|---:|---|"]
    for c, gap in summary["levels"]:
        direct = rows.get(("default", "direct", c, gap, args.tokens))
        for key in [k for k in rows if k[2:] == (c, gap, args.tokens)]:
            r = rows[key]
            t, lat = r["ttft_overhead_ms"], r["token_lateness_ms"]
            added = "–"
            if r["mode"] != "direct" and direct:
                d = direct["token_lateness_ms"]
                added = f"{fmt(diff(lat[50], d[50]), 2)} / {fmt(diff(lat[99], d[99]), 2)}"
            relay = r["mode"] != "direct"
            note = (" (disturbed: repeat " + ",".join(map(str, r["disturbed"])) + ")") if r["disturbed"] else ""
            note += " (client saturated)" if r["client_saturated"] else ""
            out.append(
                f"| C={c} gap {gap} ms | {r['mode']}{note} | {r['requests']} | {r['errors']} | {r['timeouts']} "
                f"| {fmt(t[50], 2)} / {fmt(t[95], 2)} / {fmt(t[99], 2)} | {fmt(lat[50], 2)} / {fmt(lat[99], 2)} "
                f"| {added} | {fmt(r['frames_per_s'], 0)} | {fmt(r['tokens_per_s'], 0)} "
                f"| {fmt(r['cpu_ms_per_request'], 2) if relay else '–'} "
                f"| {fmt(r['rss_growth_kb_per_stream'], 1) if relay else '–'} "
                f"| {fmt(r['sql_writes_per_request'], 2) if relay else '–'} "
                f"| {' / '.join(fmt(r['cores'][k], 2) for k in ('daphne', 'mock', 'client', 'other'))} |")
    out += ["", "### Server CPU: fixed cost per request and cost per relayed token (1-token vs "
            f"{args.tokens}-token rounds at the same C)", "",
            f"| level | path | CPU ms/req, 1 token | CPU ms/req, {args.tokens} tokens | CPU µs/token (each repeat) "
            f"| page GET + ws handshake ms/conversation | SQL writes/req 1 / {args.tokens} tok "
            f"| rows/req (conversation, message, usagerecord) 1 / {args.tokens} tok |",
            "|---|---|---:|---:|---|---:|---|---|"]
    for p in summary["per_token"]:
        rows_txt = "–"
        if p["rows_1"] and p["rows_n"]:
            pick = ("chat_conversation", "chat_message", "billing_usagerecord")
            rows_txt = (",".join(fmt(p["rows_1"][t], 0) for t in pick) + " / "
                        + ",".join(fmt(p["rows_n"][t], 0) for t in pick))
        out.append(f"| C={p['c']} gap {p['gap_ms']} | {p['mode']} | {fmt(p['cpu_ms_per_request_1'], 2)} "
                   f"| {fmt(p['cpu_ms_per_request_n'], 2)} | {fmt(p['cpu_us_per_token'], 0)} "
                   f"({', '.join(fmt(x, 0) for x in p['cpu_us_per_token_each'])}) "
                   f"| {fmt(p['setup_ms_per_conversation'], 2)} "
                   f"| {fmt(p['sql_writes_1'], 1)} / {fmt(p['sql_writes_n'], 1)} | {rows_txt} |")
    flush = [k for k in rows if k[0].startswith("flush")]
    if flush:
        c, gap = args.flush_level
        out += ["", f"### Flush interval trade-off (C={c}, gap {gap} ms, {args.tokens} tokens)", "",
                "| CHAT_FLUSH_MS | frames/s | per-token delay p50 / p99 ms | added delay p50 / p99 ms "
                "| first-token overhead p50 / p99 ms | server CPU ms/req | err |", "|---|---:|---|---|---|---:|---:|"]
        direct = rows.get(("default", "direct", c, gap, args.tokens))
        for key in [("default", "relay", c, gap, args.tokens)] + flush:
            r = rows.get(key)
            if not r or not direct:
                continue
            lat, d, t = r["token_lateness_ms"], direct["token_lateness_ms"], r["ttft_overhead_ms"]
            name = "30 (default)" if key[0] == "default" else key[0][5:]
            out.append(f"| {name} | {fmt(r['frames_per_s'], 0)} | {fmt(lat[50], 2)} / {fmt(lat[99], 2)} "
                       f"| {fmt(diff(lat[50], d[50]), 2)} / {fmt(diff(lat[99], d[99]), 2)} "
                       f"| {fmt(t[50], 2)} / {fmt(t[99], 2)} | {fmt(r['cpu_ms_per_request'], 2)} | {r['errors']} |")
    hold = summary["extra"].get("hold")
    if hold:
        t = hold["ttft_overhead_ms"]
        out += ["", f"### {hold['c']} open streams at one token a second (fresh, warmed process)", "",
                "| streams | err | t/o | first-token overhead p50 / p99 ms | RSS fresh KB | RSS peak KB "
                "| KB per open stream (socket + stream) | KB per stream (sockets already open) |",
                "|---:|---:|---:|---|---:|---:|---:|---:|",
                f"| {hold['c']} | {hold['errors']} | {hold['timeouts']} | {fmt(t[50], 2)} / {fmt(t[99], 2)} "
                f"| {hold['rss_fresh_base_kb']} | {hold['rss_peak_kb']} | {fmt(hold['rss_kb_per_open_stream'], 1)} "
                f"| {fmt(hold['rss_growth_kb_per_stream'], 1)} |"]
    profile = summary["extra"].get("profile")
    if profile and profile.get("summary"):
        out += ["", profile["summary"]["markdown"]]
    out += ["", targets(summary, rows, args)]
    return "\n".join(out)


def targets(summary, rows, args):
    """Return the targets table with each one's measured value."""
    lines = ["### Targets", "", "| target | measured | status |", "|---|---|---|"]

    def add(name, value, ok):
        lines.append(f"| {name} | {value} | {'met' if ok else 'NOT met'} |")

    r = rows.get(("default", "relay", 1, 10, args.tokens))
    if r:
        v = r["ttft_overhead_ms"][50]
        add("C=1: first-token overhead p50 < 2 ms", f"{fmt(v, 2)} ms", v is not None and v < 2)
    for c, gap in ((50, 10), (200, 20)):
        r, d = rows.get(("default", "relay", c, gap, args.tokens)), rows.get(("default", "direct", c, gap, args.tokens))
        if not r:
            continue
        add(f"C={c}: zero errors", f"{r['errors']} errors, {r['timeouts']} timeouts", not r["errors"] + r["timeouts"])
        v = r["ttft_overhead_ms"][99]
        add(f"C={c}: first-token overhead p99 < 25 ms", f"{fmt(v, 2)} ms", v is not None and v < 25)
        if d:
            v = diff(r["token_lateness_ms"][99], d["token_lateness_ms"][99])
            add(f"C={c}: added inter-token delay p99 < 20 ms", f"{fmt(v, 2)} ms", v is not None and v < 20)
    for p in summary["per_token"]:
        if p["mode"] != "relay":
            continue
        v = p["cpu_us_per_token"]
        add(f"C={p['c']}: relay CPU per token < 50 µs", f"{fmt(v, 0)} µs", v is not None and v < 50)
        v = p["cpu_ms_per_request_1"]
        add(f"C={p['c']}: relay CPU per request < 5 ms (1-token request, socket open)", f"{fmt(v, 2)} ms",
            v is not None and v < 5)
        v = (p["cpu_ms_per_request_1"] or 0) + (p["setup_ms_per_conversation"] or 0)
        add(f"C={p['c']}: (for reference) per conversation incl. page GET + handshake < 5 ms", f"{fmt(v, 2)} ms",
            v < 5)
    hold = summary["extra"].get("hold")
    if hold:
        add(f"{hold['c']} open streams, zero errors", f"{hold['errors']} errors, {hold['timeouts']} timeouts",
            not hold["errors"] + hold["timeouts"])
        v = hold["rss_kb_per_open_stream"]
        add("< 50 KB per open stream", f"{fmt(v, 1)} KB", v < 50)
    return "\n".join(lines)
