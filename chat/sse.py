"""An incremental Server-Sent Events decoder that follows the WHATWG event-stream rules.

Bytes go in as they arrive from the network; complete events come out. Lines may end in LF,
CRLF or CR (a CRLF split across two reads counts once), lines starting with a colon are
comments, `data:` lines join with LF, a single space after the colon is dropped, a UTF-8
character split across reads is decoded whole, and a byte-order mark opening the stream is
dropped. Each byte is looked at a bounded number of times however long a line grows, and an
event larger than its cap ends the stream with `EventTooLarge`.
"""

import asyncio
import codecs
import logging
from dataclasses import dataclass

from django.conf import settings

from chat.providers import UpstreamError

log = logging.getLogger(__name__)

END = object()  # returned by a `texts` reader: the stream is complete


@dataclass(slots=True)
class Event:
    data: str
    event: str = "message"
    id: str | None = None
    retry: int | None = None


class EventTooLarge(UpstreamError):
    """The upstream sent an event over CHAT_MAX_EVENT_BYTES: the reply ends rather than buffer it."""

    def __init__(self, limit):
        super().__init__(
            f"The upstream sent an event larger than {limit} bytes (CHAT_MAX_EVENT_BYTES); the reply was ended."
        )


def _size(text):
    """Return the UTF-8 length of `text` (str.isascii is O(1) in CPython, so ASCII costs nothing)."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


class SSEDecoder:
    """Turn chunks of an event stream into `Event`s, one network read at a time."""

    __slots__ = ("_decoder", "_tail", "_tail_size", "_cr", "_begun", "_data", "_data_size", "_event", "_retry",
                 "limit", "last_event_id")

    def __init__(self, limit=None):
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._tail = []  # pieces of an unfinished line, joined once when its line ends
        self._tail_size = 0  # their UTF-8 bytes
        self._cr = False  # the last read ended in CR: an LF that starts the next one is its pair
        self._begun = False  # some text has been decoded (a byte-order mark can only come first)
        self._data = []
        self._data_size = 0  # UTF-8 bytes of the event's data lines so far
        self._event = ""
        self._retry = None
        self.limit = limit  # the largest event accepted, in bytes; None: no cap
        self.last_event_id = None

    def feed(self, chunk):
        """Return the events completed by this chunk of bytes; raise EventTooLarge past the cap."""
        self._check()  # an event that went over in the last read, after events it completed
        text = self._decoder.decode(chunk)
        if not text:
            return []
        if not self._begun:
            self._begun = True
            if text[0] == "\ufeff":
                text = text[1:]
                if not text:
                    return []
        if self._cr and text[0] == "\n":
            text = text[1:]
        self._cr = text.endswith("\r")
        if "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        if "\n" not in text:  # the line goes on: keep the piece, join nothing yet
            self._tail.append(text)
            self._tail_size += _size(text)
            self._check()
            return []
        lines = text.split("\n")
        if self._tail:
            self._tail.append(lines[0])
            lines[0] = "".join(self._tail)
            self._tail.clear()
            self._tail_size = 0
        tail = lines.pop()
        events = []
        for line in lines:
            if line:
                self._field(line)
            elif self._data:
                events.append(Event("\n".join(self._data), self._event or "message", self.last_event_id, self._retry))
                self._data, self._event, self._data_size = [], "", 0
            else:
                self._event = ""
        if tail:
            self._tail.append(tail)
            self._tail_size = _size(tail)
        if not events:  # else the events go out first, and the next read (or close) raises
            self._check()
        return events

    def _check(self):
        if self.limit is not None and self._data_size + self._tail_size > self.limit:
            raise EventTooLarge(self.limit)

    def close(self):
        """Return the event left unterminated when the stream ended (the spec discards it; we keep it)."""
        self._check()
        tail = "".join(self._tail) + self._decoder.decode(b"", final=True)
        self._tail.clear()
        self._tail_size = 0
        if tail:
            self._field(tail)
        if not self._data:
            return None
        event = Event("\n".join(self._data), self._event or "message", self.last_event_id, self._retry)
        self._data, self._event, self._data_size = [], "", 0
        return event

    def _field(self, line):
        if line[0] == ":":
            return
        name, colon, value = line.partition(":")
        if colon and value[:1] == " ":
            value = value[1:]
        if name == "data":
            self._data.append(value)
            self._data_size += _size(value) + 1
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self.last_event_id = value
        elif name == "retry":
            if value.isdigit() and value.isascii():
                self._retry = int(value)


async def texts(chunks, read):
    """Yield, for each chunk of bytes, the text that `read(event)` returns for its events, joined.

    `read` may return END to finish the stream, or raise; the text read before the event that
    raised is yielded first, so nothing that arrived is lost.

    A stream spends nearly all its life waiting for its next chunk: nothing of the last one (its
    bytes, its event and the event's data, ~0.7 KB with OpenAI's chunks) is kept over that wait.
    """
    decoder = SSEDecoder(settings.CHAT_MAX_EVENT_BYTES)
    async for chunk in chunks:
        parts, failure, ended = [], None, False
        try:
            for event in decoder.feed(chunk):
                text = read(event)
                if text is END:
                    ended = True
                    break
                if text:
                    parts.append(text)
        except Exception as exc:  # re-raised below, once the text before it is out
            failure = exc
        chunk = event = text = None
        if parts:
            text, parts = parts[0] if len(parts) == 1 else "".join(parts), None
            yield text
            text = None
        if failure is not None:
            raise failure
        if ended:
            await drain(chunks)
            return
    tail = decoder.close()
    if tail is not None:
        text = read(tail)
        if text and text is not END:
            yield text


async def drain(chunks, within=0.5):
    """Read what follows the end marker (the body's last chunk), so the connection can be reused.

    An HTTP client returns a connection to its pool only once the response body has been read to
    its end; a server that keeps the body open past the end marker just loses its connection.
    """
    try:
        async with asyncio.timeout(within):
            async for _ in chunks:
                pass
    except TimeoutError:
        log.debug("the upstream kept the body open after the end marker; its connection is closed")
