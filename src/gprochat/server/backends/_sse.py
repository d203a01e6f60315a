"""An incremental server-sent events decoder (the WHATWG ``text/event-stream`` rules).

Bytes go in as they arrive off the socket, in chunks of any size; whole events come
out. A chunk may end mid-line, mid-UTF-8 character or between the ``\\r`` and ``\\n``
of a line ending: lines are only decoded once complete, so none of that matters.

    >>> decoder = SSEDecoder()
    >>> decoder.feed(b'data: {"a"')
    []
    >>> decoder.feed(b': 1}\\r\\n\\r\\n')
    [ServerSentEvent(event='message', data='{"a": 1}', id=None)]
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SSEDecoder", "SSEError", "ServerSentEvent"]


class SSEError(ValueError):
    """The byte stream is not a usable event stream (a line past ``max_line``)."""


@dataclass(frozen=True)
class ServerSentEvent:
    """One dispatched event: its ``event`` type, ``data`` (lines joined by ``\\n``), ``id``."""

    event: str
    data: str
    id: str | None = None


class SSEDecoder:
    """Turns a byte stream into events; ``feed`` each chunk, then ``close`` at EOF.

    ``max_line`` bounds the memory a peer can make us hold for one unfinished line.
    """

    def __init__(self, *, max_line: int = 4 * 1024 * 1024) -> None:
        self.max_line = max_line
        self._buffer = b""
        self._data: list[str] = []
        self._event = ""
        self._id: str | None = None

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Add bytes; return the events they complete (often none, sometimes several)."""
        self._buffer += chunk
        events: list[ServerSentEvent] = []
        while True:
            line, ending = self._split_line()
            if ending is None:
                break
            event = self._process_line(line)
            if event is not None:
                events.append(event)
        if len(self._buffer) > self.max_line:
            raise SSEError(f"event-stream line longer than {self.max_line} bytes")
        return events

    def close(self) -> list[ServerSentEvent]:
        """End of stream: return the last event if its lines were all complete.

        The spec discards an event not followed by a blank line; we keep one whose
        lines all ended, because some servers omit the final blank line. A cut line
        (no line ending) is dropped: it is a truncated message, not a message.
        """
        self._buffer = b""
        event = self._dispatch()
        return [event] if event else []

    def _split_line(self) -> tuple[bytes, bytes | None]:
        buffer = self._buffer
        cr, lf = buffer.find(b"\r"), buffer.find(b"\n")
        if lf != -1 and (cr == -1 or lf < cr):
            end, width = lf, 1
        elif cr != -1:
            if cr + 1 == len(buffer):
                # A lone trailing \r may be the first half of \r\n: wait for the next byte.
                return b"", None
            end, width = cr, 2 if buffer[cr + 1 : cr + 2] == b"\n" else 1
        else:
            return b"", None
        self._buffer = buffer[end + width :]
        return buffer[:end], buffer[end : end + width]

    def _process_line(self, raw: bytes) -> ServerSentEvent | None:
        if not raw:
            return self._dispatch()
        line = raw.decode("utf-8", errors="replace")
        if line.startswith(":"):  # a comment, e.g. a keep-alive ": ping"
            return None
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value
        elif field == "id" and "\0" not in value:
            self._id = value
        # "retry" and unknown fields only matter to reconnecting EventSource clients.
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        data, event = self._data, self._event
        self._data, self._event = [], ""
        if not data:
            return None
        return ServerSentEvent(event=event or "message", data="\n".join(data), id=self._id)
