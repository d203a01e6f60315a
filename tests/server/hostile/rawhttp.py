"""A raw HTTP/1.1 client over asyncio streams, for requests no client library would send.

The request is bytes written as given (nothing normalizes it); the answer is parsed
just enough to judge it: status, headers, body, and whether the server closed the
connection. Every read has a deadline: a server that hangs fails the probe.

``exchange`` is one request and its answers on a fresh connection; ``connect`` gives a
``Connection`` for a conversation in steps (answer, wait, send more, see it closed).
Either way the socket is closed when the call or the ``async with`` ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Answer", "Connection", "Hang", "connect", "exchange", "request", "read_answer"]

#: Longest a probe waits for any one answer; far above what a healthy server needs.
READ_TIMEOUT = 15.0


class Hang(AssertionError):
    """The server neither answered nor closed the connection in time."""


@dataclass
class Answer:
    """One response, or ``status None``: the server closed the connection without one."""

    status: int | None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    elapsed: float = 0.0
    #: The status line's version, as the server wrote it ("HTTP/1.1").
    version: str = ""

    @property
    def closed_without_answer(self) -> bool:
        return self.status is None

    def json(self) -> Any:
        return json.loads(self.body)

    def __repr__(self) -> str:
        body = self.body[:300] + (b"..." if len(self.body) > 300 else b"")
        return f"Answer(status={self.status}, body={body!r}, elapsed={self.elapsed:.2f}s)"


def request(
    method: str,
    path: str,
    body: bytes = b"",
    *,
    headers: Sequence[tuple[str, str]] = (),
    host: str = "127.0.0.1",
    content_length: bool = True,
    version: str = "HTTP/1.1",
) -> bytes:
    """The bytes of one request; ``headers`` are added after Host (and Content-Length)."""
    lines = [f"{method} {path} {version}", f"Host: {host}"] if host else [f"{method} {path} {version}"]
    if content_length and (body or method in ("POST", "PUT")):
        lines.append(f"Content-Length: {len(body)}")
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


#: Called with each piece of a body as it arrives (a chunk, or one read of a body
#: delimited by the close): a probe can act while the answer is still coming.
OnPiece = Callable[[bytes], object]


async def _read_head(reader: asyncio.StreamReader) -> tuple[str, int, dict[str, str]] | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise AssertionError(f"the server sent a partial response head: {exc.partial[:200]!r}") from exc
    except (ConnectionResetError, BrokenPipeError):
        return None
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parts = status_line.split(" ", 2)
    assert parts[0].startswith("HTTP/1."), f"not an HTTP/1 status line: {status_line!r}"
    headers: dict[str, str] = {}
    for line in header_lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return parts[0], int(parts[1]), headers


async def _read_body(
    reader: asyncio.StreamReader, status: int, headers: dict[str, str], head: bool, on_piece: OnPiece
) -> bytes:
    if head or status in (204, 304) or 100 <= status < 200:
        return b""
    pieces: list[bytes] = []
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                await reader.readuntil(b"\r\n")  # no trailers from our server
                return b"".join(pieces)
            pieces.append(await reader.readexactly(size))
            on_piece(pieces[-1])
            await reader.readexactly(2)
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
        on_piece(body)
        return body
    while piece := await reader.read(65536):  # delimited by the close
        pieces.append(piece)
        on_piece(piece)
    return b"".join(pieces)


async def read_answer(
    reader: asyncio.StreamReader, *, head: bool = False, on_piece: OnPiece | None = None
) -> Answer:
    """Read one final response (skipping 100 Continue); ``status None`` if the server closed."""
    while True:
        parsed = await _read_head(reader)
        if parsed is None:
            return Answer(None)
        version, status, headers = parsed
        if status != 100:
            break
    try:
        body = await _read_body(reader, status, headers, head, on_piece or (lambda piece: None))
    except (asyncio.IncompleteReadError, ConnectionResetError) as exc:
        raise AssertionError(f"{status} answer cut short: {exc!r}") from exc
    return Answer(status, headers, body, version=version)


class Connection:
    """One raw connection (from ``connect``): send bytes as given, read answers one by one.

    ``answer()`` gives the next answer, or ``status None`` once the server has closed:
    asking for one more answer is how a probe sees the connection closed.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float) -> None:
        self.reader, self.writer, self.timeout = reader, writer, timeout
        self.started = time.monotonic()

    async def send(self, data: bytes) -> None:
        """Write ``data``; raises ``ConnectionError`` if the server has closed."""
        self.writer.write(data)
        await self.writer.drain()

    async def answer(
        self, *, head: bool = False, on_piece: OnPiece | None = None, timeout: float | None = None
    ) -> Answer:
        """The next answer (``elapsed`` counts from the connect), within ``timeout``
        (the connection's) or ``Hang``."""
        timeout = self.timeout if timeout is None else timeout
        try:
            answer = await asyncio.wait_for(read_answer(self.reader, head=head, on_piece=on_piece), timeout)
        except TimeoutError as exc:
            raise Hang(f"no answer and no close within {timeout}s") from exc
        answer.elapsed = time.monotonic() - self.started
        return answer


@contextlib.asynccontextmanager
async def connect(port: int, *, timeout: float = READ_TIMEOUT) -> AsyncIterator[Connection]:
    """A ``Connection`` to 127.0.0.1:``port``, closed (and waited for) when the block ends."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    try:
        yield Connection(reader, writer, timeout)
    finally:
        writer.close()
        with contextlib.suppress(OSError, TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(writer.wait_closed(), 5)


async def exchange(
    port: int,
    data: bytes | Sequence[bytes | float],
    *,
    answers: int = 1,
    head: bool = False,
    timeout: float = READ_TIMEOUT,
    write_first: bool = False,
) -> list[Answer]:
    """Write ``data`` (bytes, or pieces with pauses in seconds between) and read ``answers``.

    Reading starts at once, beside the writing: a server that answers or closes early
    (a 413 before the body, a timeout cutting a slow client) ends the probe then. A
    write the server refuses is not an error; what it answered is read. Stops early when
    the server closes; ``timeout`` bounds the wait for each answer. ``write_first``
    reads nothing until everything is written, as urllib and many SDKs do.
    """
    pieces = [data] if isinstance(data, bytes) else list(data)
    async with connect(port, timeout=timeout) as connection:

        async def write() -> None:
            try:
                for piece in pieces:
                    if isinstance(piece, (int, float)):
                        await asyncio.sleep(piece)
                    else:
                        await connection.send(piece)
            except (ConnectionResetError, BrokenPipeError):
                pass

        writing = asyncio.create_task(write())
        try:
            if write_first:
                try:
                    await asyncio.wait_for(asyncio.shield(writing), timeout)
                except TimeoutError as exc:
                    raise Hang(f"the server neither read the request nor closed within {timeout}s") from exc
            results: list[Answer] = []
            for _ in range(answers):
                try:
                    answer = await connection.answer(head=head)
                except Hang as exc:
                    state = "still writing" if not writing.done() else "request written"
                    raise Hang(f"{exc} ({state})") from exc
                results.append(answer)
                if answer.status is None:
                    break
            return results
        finally:
            writing.cancel()
            await asyncio.wait([writing])  # ended before its connection closes


async def wait_closed(reader: asyncio.StreamReader, timeout: float) -> float:
    """Seconds until the server closes the connection (reading and dropping what it sends)."""
    started = time.monotonic()
    try:
        while await asyncio.wait_for(reader.read(65536), timeout):
            pass
    except TimeoutError as exc:
        raise Hang(f"the server kept an idle connection open for more than {timeout}s") from exc
    except ConnectionResetError:
        pass
    return time.monotonic() - started
