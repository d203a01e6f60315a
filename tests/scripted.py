"""A scripted HTTP/1.1 server on loopback, for faults our own server never makes.

Each test gives a ``script(request, writer)`` coroutine that writes whatever bytes
it likes: a split UTF-8 character, a cut chunked body, an error status, a stall.
The server records every request and counts connections.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Optional

from .processes import free_port


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    connection: int
    #: ``time.monotonic()`` when the request had arrived whole.
    received: float = field(default_factory=time.monotonic)

    def json(self) -> Any:
        return json.loads(self.body)


Script = Callable[[RecordedRequest, asyncio.StreamWriter], Awaitable[None]]


def head(status: int = 200, headers: Optional[dict[str, str]] = None, *, chunked: bool = True) -> bytes:
    """A status line and headers; chunked transfer encoding unless told otherwise."""
    reason = {
        200: "OK",
        400: "Bad Request",
        401: "Unauthorized",
        429: "Too Many Requests",
        500: "Internal Server Error",
        503: "Service Unavailable",
    }.get(status, "Status")
    lines = [f"HTTP/1.1 {status} {reason}"]
    all_headers = {"Content-Type": "text/plain; charset=utf-8"}
    if chunked:
        all_headers["Transfer-Encoding"] = "chunked"
    all_headers.update(headers or {})
    lines += [f"{name}: {value}" for name, value in all_headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body."""
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


LAST_CHUNK = b"0\r\n\r\n"


def full_response(status: int, body: bytes, headers: Optional[dict[str, str]] = None) -> bytes:
    """A complete response with Content-Length."""
    all_headers = {"Content-Length": str(len(body))}
    all_headers.update(headers or {})
    return head(status, all_headers, chunked=False) + body


@dataclass
class ScriptedServer:
    """``async with ScriptedServer(script) as server:`` then talk to ``server.base_url``."""

    script: Script
    requests: list[RecordedRequest] = field(default_factory=list)
    connections: int = 0
    disconnects: int = 0
    _server: Optional[asyncio.base_events.Server] = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def base_url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aenter__(self) -> ScriptedServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        # A connection accepted just before close() has its handler task scheduled but not
        # yet running (not in _tasks): let such tasks start, then cancel them too, until
        # none is left, so every accepted connection's writer is closed on this loop.
        while True:
            for _ in range(3):
                await asyncio.sleep(0)
            pending = [task for task in self._tasks if not task.done()]
            if not pending:
                break
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        number = self.connections
        try:
            while not writer.is_closing():
                request = await _read_request(reader, number)
                if request is None:
                    break
                self.requests.append(request)
                await self.script(request, writer)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            # The server is closing (a stalling script): ending quietly here keeps asyncio
            # from logging the cancelled handler as an error.
            pass
        finally:
            self.disconnects += 1
            writer.close()
            self._tasks.discard(task)


async def _read_request(reader: asyncio.StreamReader, connection: int) -> Optional[RecordedRequest]:
    try:
        head_bytes = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    lines = head_bytes.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    body = await reader.readexactly(length) if length else b""
    return RecordedRequest(method, path, headers, body, connection)


# -- upstreams for failover: one script per fault, and a fleet of them --------------------


def answering(*pieces: str) -> Script:
    """A good answer streamed in ``pieces``."""

    async def script(request: RecordedRequest, writer: asyncio.StreamWriter) -> None:
        writer.write(head())
        for piece in pieces:
            writer.write(chunk(piece.encode()))
            await writer.drain()
        writer.write(LAST_CHUNK)

    return script


def refusing_status(status: int, message: str, headers: Optional[dict[str, str]] = None) -> Script:
    """Every request answered ``status`` with the protocol's JSON error body."""
    body = json.dumps({"error": {"message": message}}).encode()

    async def script(request: RecordedRequest, writer: asyncio.StreamWriter) -> None:
        writer.write(full_response(status, body, headers))

    return script


async def stalling(request: RecordedRequest, writer: asyncio.StreamWriter) -> None:
    """Accepts the request and never answers (until the test ends)."""
    await asyncio.sleep(3600)


def cutting(first: str) -> Script:
    """Starts an answer with ``first``, then drops the connection mid-body."""

    async def script(request: RecordedRequest, writer: asyncio.StreamWriter) -> None:
        writer.write(head() + chunk(first.encode()))
        await writer.drain()
        writer.close()

    return script


def closed_url() -> str:
    """A loopback URL nothing listens on: connections are refused."""
    return f"http://127.0.0.1:{free_port()}"


FAULTS: dict[str, Script] = {
    "rate-limited": refusing_status(429, "Too many requests.", {"Retry-After": "2"}),
    "failing": refusing_status(500, "The model crashed."),
    "stalling": stalling,
    "cutting": cutting("Half an ans"),
    "wrong-key": refusing_status(401, "Invalid signature."),
    "healthy": answering("The whole ", "answer."),
}
"""The issue's scripted upstreams by name (the refusing one is ``closed_url()``)."""


class Fleet:
    """Several scripted upstreams at once: ``fleet.url(name)``, ``fleet.count(name)``.

    ``async with Fleet(names) as fleet:`` in a test's loop; ``with Fleet(names).in_thread()``
    from synchronous tests (a CLI run as a process), on a loop of its own.
    """

    def __init__(self, scripts: dict[str, Script]) -> None:
        self.scripts = scripts
        self.servers: dict[str, ScriptedServer] = {}
        self.refused = closed_url()

    def url(self, name: str) -> str:
        return self.refused if name == "refusing" else self.servers[name].base_url

    def count(self, name: str) -> int:
        """Requests the upstream ``name`` received."""
        return len(self.servers[name].requests)

    async def __aenter__(self) -> Fleet:
        for name, script in self.scripts.items():
            self.servers[name] = await ScriptedServer(script).__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for server in self.servers.values():
            await server.__aexit__(None, None, None)

    def in_thread(self) -> _FleetThread:
        return _FleetThread(self)


class _FleetThread:
    def __init__(self, fleet: Fleet) -> None:
        import threading

        self.fleet = fleet
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> Fleet:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.fleet.__aenter__(), self.loop).result(10)
        return self.fleet

    def __exit__(self, *exc_info: object) -> None:
        asyncio.run_coroutine_threadsafe(self.fleet.__aexit__(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
