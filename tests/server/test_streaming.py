"""An answer's chunks over a raw socket: joined only when ready together, never delayed."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator

from gprochat.server import ServerConfig
from gprochat.server.backends import Backend, Conversation

from ..conftest import ServerFactory
from .helpers import http_request, signed


class GatedBackend(Backend):
    """Yields ``ready`` at once, then waits for ``gate`` (set by the test) to yield ``later``."""

    name = "gated"

    def __init__(self, ready: list[str], later: str) -> None:
        self.ready, self.later = ready, later
        self.gate = threading.Event()
        self.closed = threading.Event()

    async def stream(self, conversation: Conversation) -> AsyncIterator[str]:
        try:
            for text in self.ready:
                yield text
            while not self.gate.is_set():
                await asyncio.sleep(0.01)
            yield self.later
        finally:
            self.closed.set()


async def _read_chunk(reader: asyncio.StreamReader) -> bytes:
    size = int((await asyncio.wait_for(reader.readline(), 30)).strip(), 16)
    data = await asyncio.wait_for(reader.readexactly(size + 2), 30)
    return data[:-2]


async def _open(base_url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = base_url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(http_request("POST", "/api/generate", json.dumps(signed()).encode()))
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    assert head.startswith(b"HTTP/1.1 200") and b"chunked" in head.lower()
    return reader, writer


async def test_chunks_ready_together_go_as_one_and_nothing_waits_for_later(
    make_server: ServerFactory,
) -> None:
    backend = GatedBackend(["one ", "two ", "three "], "four")
    server = make_server(backend=backend)
    reader, writer = await _open(server.base_url)
    try:
        # The three ready chunks arrive, joined, while the backend still waits for
        # the fourth: joining never holds a byte back.
        assert await _read_chunk(reader) == b"one two three "
        assert not backend.gate.is_set()
        backend.gate.set()
        assert await _read_chunk(reader) == b"four"
        assert await _read_chunk(reader) == b""  # the terminator: a complete answer
    finally:
        writer.close()


async def test_a_client_leaving_while_the_backend_waits_stops_it(make_server: ServerFactory) -> None:
    backend = GatedBackend(["partial "], "never sent")
    server = make_server(ServerConfig(max_streams=1), backend=backend)
    reader, writer = await _open(server.base_url)
    assert await _read_chunk(reader) == b"partial "
    writer.close()
    # The backend's stream is closed at once, not when its next chunk comes.
    for _ in range(500):
        if backend.closed.is_set():
            break
        await asyncio.sleep(0.01)
    assert backend.closed.is_set() and not backend.gate.is_set()
    for _ in range(100):
        if server.app.state.guard.streams.in_flight == 0:
            break
        await asyncio.sleep(0.01)
    assert server.app.state.guard.streams.in_flight == 0
