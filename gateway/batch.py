"""Batch jobs: OpenAI's batch input lines relayed upstream, their results appended line by line.

The output is appended and fsynced one line at a time, so an interrupted job loses nothing it
finished, and a rerun with the same output skips every custom_id already there.
"""

import asyncio
import json
import os
import random
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings

from billing.models import ModelPrice
from chat.providers import http
from chat.turns import usage_of
from gateway import accounting, wire
from gateway.body import parse
from gateway.errors import ApiError, from_upstream
from gateway.exchange import Exchange
from gateway.progress import Progress

URL = "/v1/chat/completions"
MAX_RATE_LIMIT_WAITS = 50  # Retry-After waits that do not spend a line's retries, before they do


class BatchError(Exception):
    """The job cannot start: the message names the line or flag to fix."""


@dataclass(slots=True)
class Line:
    number: int
    custom_id: str
    body: bytes  # the request body, the model override applied

    def ask(self):
        """Return a fresh Ask for one attempt at this line (streamed upstream: exact usage, stall timeout)."""
        ask = parse(self.body)
        ask.call.stream = True
        return ask


def read_input(path, model=None):
    """Return every line of a batch input file, or raise BatchError naming the first bad line."""
    try:
        with open(path, "rb") as file:
            raw_lines = file.read().splitlines()
    except OSError as exc:
        raise BatchError(f"Cannot read {path}: {exc.strerror}.") from None
    lines, seen = [], set()
    for number, raw in enumerate(raw_lines, start=1):
        if not raw.strip():
            continue
        lines.append(read_line(number, raw, model, seen))
    if not lines:
        raise BatchError(f"{path} holds no requests: one JSON object a line, with custom_id, method, url and body.")
    return lines


def read_line(number, raw, model, seen):
    """Return one checked input line."""
    try:
        item = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BatchError(f"line {number}: not valid JSON.") from None
    if not isinstance(item, dict):
        raise BatchError(f"line {number}: must be a JSON object with custom_id, method, url and body.")
    custom_id = item.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        raise BatchError(f"line {number}: 'custom_id' must be a non-empty string.")
    if custom_id in seen:
        raise BatchError(f"line {number}: custom_id {custom_id!r} is used by an earlier line; each must be unique.")
    seen.add(custom_id)
    if item.get("method") != "POST" or item.get("url") != URL:
        raise BatchError(f"line {number} ({custom_id}): method must be POST and url {URL}.")
    body = item.get("body")
    if not isinstance(body, dict):
        raise BatchError(f"line {number} ({custom_id}): 'body' must be a JSON object.")
    if model:
        body = {**body, "model": model}
    encoded = json.dumps(body).encode()
    try:
        parse(encoded)
    except ApiError as exc:
        where = f" ({exc.param})" if exc.param else ""
        raise BatchError(f"line {number} ({custom_id}): {exc}{where}") from None
    return Line(number, custom_id, encoded)


def finished(path, retry_errors=False):
    """Return the custom_ids the output file already holds, preparing it for appending.

    A last line cut short by a crash is dropped. With `retry_errors`, failed lines are dropped too
    (the file is rewritten atomically) so that they run again.
    """
    if not os.path.exists(path):
        return set()
    with open(path, "rb") as file:
        data = file.read()
    kept, done = [], set()
    for raw in data.splitlines(keepends=True):
        try:
            item = json.loads(raw)
            custom_id = item["custom_id"]
        except (ValueError, KeyError, TypeError):
            continue  # a torn line: its request runs again
        if retry_errors and item.get("error") is not None:
            continue
        kept.append(raw if raw.endswith(b"\n") else raw + b"\n")
        done.add(custom_id)
    content = b"".join(kept)
    if content != data:
        temporary = f"{path}.tmp"
        with open(temporary, "wb") as file:
            file.write(content)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    return done


def worst_case(lines):
    """Return the most the lines could cost, or raise BatchError for a model with no price."""
    total, prices = Decimal(0), {}
    for line in lines:
        ask = line.ask()
        model = ask.call.model
        if model not in prices:
            prices[model] = ModelPrice.objects.in_force(model)
        if prices[model] is None:
            raise BatchError(f"line {line.number} ({line.custom_id}): {model} has no price, so --max-cost cannot "
                             f"bound the job. Add a price (import_prices) or leave out --max-cost.")
        total += prices[model].cost(*ask.worst_case_tokens())
    return total


class Job:
    """A batch run: lines to do, a concurrency limit, retries, and the output they are appended to."""

    def __init__(self, lines, output, concurrency=4, retries=3, progress=None):
        self.lines, self.output = lines, output
        self.concurrency, self.retries = concurrency, retries
        self.progress = progress or Progress(len(lines))
        self.exchanges = set()
        self.interrupted = False
        self.file = None

    async def run(self):
        """Run every line (or until interrupted); return the Progress with the totals."""
        queue = list(reversed(self.lines))
        self.file = open(self.output, "ab")  # noqa: SIM115 - closed below, after the workers
        try:
            workers = [self.work(queue) for _ in range(min(self.concurrency, len(self.lines)))]
            await asyncio.gather(*workers)
        finally:
            self.file.close()
            await http.close_client()
        self.progress.finish()
        return self.progress

    def interrupt(self):
        """Stop taking lines and end those in flight (their upstream requests close at once)."""
        self.interrupted = True
        for exchange in list(self.exchanges):
            exchange.cancel("disconnect")

    async def work(self, queue):
        while queue and not self.interrupted:
            await self.run_line(queue.pop())

    async def run_line(self, line):
        """Attempt one line until it succeeds, fails for good, or the job is interrupted."""
        attempt = waits = 0
        while True:
            exchange = Exchange(line.ask().call)
            self.exchanges.add(exchange)
            try:
                error = await exchange.run(ignore)
            finally:
                self.exchanges.discard(exchange)
            record = await accounting.arecord(exchange, "batch")
            self.progress.spent(record)
            if exchange.reason == "disconnect":
                return  # interrupted: the line runs again next time
            if error is None:
                return self.write(line, record, 200, wire.completion_object(
                    exchange.call.model, "".join(exchange.text), exchange.call.finish_reason,
                    usage_of(exchange.call, False)[0]))
            failure = from_upstream(error)
            if not retryable(error) or self.interrupted:
                return self.write(line, record, failure.status, error_of(failure))
            if error.retry_after is not None and waits < MAX_RATE_LIMIT_WAITS:
                waits += 1
                delay = min(error.retry_after, settings.CHAT_RETRY_MAX_WAIT)
            elif attempt < self.retries:
                attempt += 1
                delay = backoff(attempt)
            else:
                return self.write(line, record, failure.status, error_of(failure))
            self.progress.retrying()
            await asyncio.sleep(delay)

    def write(self, line, record, status, body):
        """Append one output line and make it durable before going on."""
        failed = status != 200
        item = {
            "id": f"batch_req_{record.request_id.hex}",
            "custom_id": line.custom_id,
            "response": {"status_code": status, "request_id": str(record.request_id), "body": body},
            "error": {"code": body["error"]["code"], "message": body["error"]["message"]} if failed else None,
        }
        self.file.write(json.dumps(item).encode() + b"\n")
        self.file.flush()
        os.fsync(self.file.fileno())
        self.progress.line_done(failed)


async def ignore(text):
    """Take a delta and do nothing: the output line is written from the exchange's text."""


def retryable(error):
    """Return whether a failed attempt may succeed if tried again (timeouts, drops, 429 and 5xx)."""
    return error.status is None or error.status in (408, 409, 429) or error.status >= 500


def backoff(attempt):
    """Return the seconds before retry number `attempt`: exponential, with jitter."""
    base = settings.CHAT_RETRY_BACKOFF * 2 ** (attempt - 1)
    return min(random.uniform(base / 2, base * 1.5), settings.CHAT_RETRY_MAX_WAIT)


def error_of(failure):
    """Return an ApiError as OpenAI's error body."""
    return wire.error_object(failure.status, str(failure), failure.code, failure.param)
