"""The soak's books: every send against its `start`, `done`, usage record, upstream request and stored text.

`differences()` returns one line per thing that does not add up; the soak fails on any. The rules:
- every send got exactly one `start` and no `error`; a message id belongs to one send;
- a reply whose socket stayed open got exactly one `done`; a dropped one none (its socket is gone);
- every `start` has exactly one usage record, one stored reply and one upstream request (no
  retries: the mock is not asked to fail), and there are no others; only a reply stopped or
  dropped before its first token may have no upstream request (it ended before the request went
  out), and those are counted;
- the record's, the reply's and the `done`'s statuses agree: completed, stopped, or for a dropped
  socket disconnected (completed if the reply had ended before the server heard of the drop);
- a completed reply stored exactly the text the person saw and was billed exactly the tokens the
  upstream sent; a stopped one stored the text the person saw; a dropped one at least that.
"""

import psycopg

UPSTREAM = {  # record status -> the mock's statuses that go with it
    "completed": {"completed"},
    "stopped": {"closed_early", "completed"},
    "disconnected": {"closed_early", "completed"},
}


def stored(database_url):
    """Return ({message id: (status, content)} of replies, {message id: [(status, completion)]} of records,
    {content: count} of the people's messages)."""
    with psycopg.connect(database_url.replace("postgres://", "postgresql://", 1)) as db:
        replies = {mid: (status, content) for mid, status, content in db.execute(
            "SELECT id, status, content FROM chat_message WHERE role = 'assistant'")}
        records = {}
        for mid, status, completion in db.execute(
                "SELECT message_id, status, completion_tokens FROM billing_usagerecord"):
            records.setdefault(mid, []).append((status, completion))
        asked = dict(db.execute("SELECT content, count(*) FROM chat_message WHERE role = 'user' GROUP BY content"))
    return replies, records, asked


def differences(ledger, replies, records, asked, upstream_log):
    """Return ([(kind, tag, detail)] for everything that does not reconcile, {what: count} of the allowed)."""
    out, allowed = [], {"ended before the upstream request": 0}
    upstream = {}
    for entry in upstream_log:
        upstream.setdefault(entry["tag"], []).append(entry)
    owners = {}
    for sent in ledger:
        tag = sent.tag
        if sent.starts != 1:
            out.append(("start count", tag, f"{sent.starts} starts ({sent.action})"))
        if sent.errors:
            out.append(("error frame", tag, ",".join(map(str, sent.errors))))
        if sent.message is None:
            continue
        if sent.message in owners:
            out.append(("message id reused", tag, f"{sent.message} also {owners[sent.message]}"))
        owners[sent.message] = tag
        if asked.get(tag, 0) != 1:
            out.append(("stored question", tag, f"{asked.get(tag, 0)} stored"))
        expected_dones = 0 if sent.dropped else 1
        if len(sent.dones) != expected_dones:
            out.append(("done count", tag, f"{len(sent.dones)} done for a {sent.action} reply"))
        rows = records.get(sent.message, [])
        if len(rows) != 1:
            out.append(("record count", tag, f"{len(rows)} usage records"))
            continue
        status, completion = rows[0]
        reply = replies.get(sent.message)
        if reply is None:
            out.append(("stored reply", tag, "no reply row"))
            continue
        requests = upstream.get(tag, [])
        if not requests and status in ("stopped", "disconnected") and not sent.text and not reply[1]:
            allowed["ended before the upstream request"] += 1
            out += statuses(sent, status, reply[0], "closed_early")
            continue
        if len(requests) != 1:
            out.append(("upstream requests", tag, f"{len(requests)} upstream requests"))
            continue
        request = requests[0]
        out += statuses(sent, status, reply[0], request["status"])
        out += texts(sent, status, completion, reply[1], request["tokens_sent"])
    started = set(owners)
    for mid in set(records) - started:
        out.append(("record without start", str(mid), f"{records[mid]}"))
    streaming = [mid for mid, (status, _) in replies.items() if status == "streaming"]
    if streaming:
        out.append(("reply left streaming", "-", f"{len(streaming)} replies, e.g. {streaming[:5]}"))
    tags = {sent.tag for sent in ledger}
    strays = [tag for tag in upstream if tag not in tags]
    if strays:
        out.append(("upstream request without send", "-", f"{len(strays)}, e.g. {strays[:5]}"))
    return out, allowed


def statuses(sent, record, reply, upstream):
    """Return the differences between the statuses the person, the record, the reply and the upstream saw."""
    out, tag = [], sent.tag
    if sent.dropped:
        if record not in ("disconnected", "completed"):
            out.append(("status", tag, f"dropped socket, record {record}"))
        wanted_reply = "stopped" if record == "disconnected" else "completed"
    else:
        done = sent.dones[0] if sent.dones else None
        if record != done:
            out.append(("status", tag, f"done {done}, record {record}"))
        wanted_reply = done
        if sent.action == "wait" and done != "completed":
            out.append(("status", tag, f"a reply waited for ended {done}"))
    if reply != wanted_reply:
        out.append(("status", tag, f"record {record}, stored reply {reply}"))
    if upstream not in UPSTREAM.get(record, ()):
        out.append(("upstream status", tag, f"record {record}, upstream {upstream}"))
    return out


def texts(sent, record, completion, content, upstream_tokens):
    """Return the differences between the text the person saw, the stored text and the tokens billed."""
    out, tag = [], sent.tag
    seen = "".join(sent.text)
    if sent.dropped:
        if not content.startswith(seen):
            out.append(("stored text", tag, f"stored {len(content)} chars do not begin with the {len(seen)} seen"))
    elif content != seen:
        out.append(("stored text", tag, f"stored {len(content)} chars, person saw {len(seen)}"))
    if record == "completed" and completion != upstream_tokens:
        out.append(("billed tokens", tag, f"billed {completion}, upstream sent {upstream_tokens}"))
    if record == "completed" and len(content.split()) != upstream_tokens:
        out.append(("stored text", tag, f"{len(content.split())} words stored, upstream sent {upstream_tokens}"))
    return out


def summary(found, examples=3):
    """Return the differences as text: a count per kind and a few examples of each."""
    kinds = {}
    for kind, tag, detail in found:
        kinds.setdefault(kind, []).append(f"{tag}: {detail}")
    lines = []
    for kind, items in sorted(kinds.items()):
        lines.append(f"  {kind}: {len(items)}")
        lines += [f"    {item}" for item in items[:examples]]
    return "\n".join(lines)
