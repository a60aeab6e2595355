"""An incremental Server-Sent Events decoder that follows the WHATWG event-stream rules.

Bytes go in as they arrive from the network; complete events come out. Lines may end in LF,
CRLF or CR (a CRLF split across two reads counts once), lines starting with a colon are
comments, `data:` lines join with LF, a single space after the colon is dropped, and a UTF-8
character split across reads is decoded whole.
"""

import asyncio
import codecs
import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)

END = object()  # returned by a `texts` reader: the stream is complete


@dataclass(slots=True)
class Event:
    data: str
    event: str = "message"
    id: str | None = None
    retry: int | None = None


class SSEDecoder:
    """Turn chunks of an event stream into `Event`s, one network read at a time."""

    __slots__ = ("_decoder", "_tail", "_cr", "_data", "_event", "_retry", "last_event_id")

    def __init__(self):
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._tail = ""  # an unfinished line
        self._cr = False  # the last read ended in CR: an LF that starts the next one is its pair
        self._data = []
        self._event = ""
        self._retry = None
        self.last_event_id = None

    def feed(self, chunk):
        """Return the events completed by this chunk of bytes."""
        text = self._decoder.decode(chunk)
        if not text:
            return []
        if self._cr and text[0] == "\n":
            text = text[1:]
        self._cr = text.endswith("\r")
        if "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        lines = (self._tail + text).split("\n")
        self._tail = lines.pop()
        events = []
        for line in lines:
            if line:
                self._field(line)
            elif self._data:
                events.append(Event("\n".join(self._data), self._event or "message", self.last_event_id, self._retry))
                self._data, self._event = [], ""
            else:
                self._event = ""
        return events

    def close(self):
        """Return the event left unterminated when the stream ended (the spec discards it; we keep it)."""
        tail = self._decoder.decode(b"", final=True)
        if self._tail or tail:
            self._field(self._tail + tail)
            self._tail = ""
        if not self._data:
            return None
        event = Event("\n".join(self._data), self._event or "message", self.last_event_id, self._retry)
        self._data, self._event = [], ""
        return event

    def _field(self, line):
        if line[0] == ":":
            return
        name, colon, value = line.partition(":")
        if colon and value[:1] == " ":
            value = value[1:]
        if name == "data":
            self._data.append(value)
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
    """
    decoder = SSEDecoder()
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
        if parts:
            yield parts[0] if len(parts) == 1 else "".join(parts)
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
