"""A consumer that stops early releases the connection at once; the server sees it go."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator

from gprochat import GPROChat
from gprochat.server.backends import Backend, Conversation

from ..conftest import ServerFactory
from ..scripted import RecordedRequest, ScriptedServer, chunk, head

HELLO = [{"role": "user", "content": "Hello!"}]


class EndlessBackend(Backend):
    """Ticks until the server stops it; records when that happened."""

    name = "endless"

    def __init__(self) -> None:
        self.stopped = threading.Event()
        self.stopped_at = 0.0

    async def stream(self, conversation: Conversation) -> AsyncIterator[str]:
        try:
            for _ in range(600):  # 30 seconds at most, so a broken test still ends
                yield "tick "
                await asyncio.sleep(0.05)
        finally:
            self.stopped_at = time.monotonic()
            self.stopped.set()


async def until(event: threading.Event, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not event.is_set() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    return event.is_set()


async def test_breaking_out_of_async_for_stops_the_server_stream(make_server: ServerFactory) -> None:
    backend = EndlessBackend()
    server = make_server(backend=backend)
    async for text in GPROChat.create_async_generator("", HELLO, base_url=server.base_url):
        assert text.startswith("tick")
        break
    left = time.monotonic()
    assert await until(backend.stopped, timeout=1.0), "the server kept streaming after the break"
    assert backend.stopped_at - left < 1.0


async def test_aclose_stops_the_server_stream(make_server: ServerFactory) -> None:
    backend = EndlessBackend()
    server = make_server(backend=backend)
    generator = GPROChat.create_async_generator("", HELLO, base_url=server.base_url)
    await generator.__anext__()
    await generator.__anext__()
    await generator.aclose()
    assert await until(backend.stopped, timeout=1.0)


async def test_cancelling_the_task_stops_the_server_stream(make_server: ServerFactory) -> None:
    backend = EndlessBackend()
    server = make_server(backend=backend)
    first_text = asyncio.Event()

    async def consume() -> None:
        async for _ in GPROChat.create_async_generator("", HELLO, base_url=server.base_url):
            first_text.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first_text.wait(), timeout=10)
    assert not backend.stopped.is_set()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()
    assert await until(backend.stopped, timeout=1.0)


def test_closing_the_sync_generator_stops_the_server_stream(make_server: ServerFactory) -> None:
    backend = EndlessBackend()
    server = make_server(backend=backend)
    chunks = GPROChat.create_completion("", HELLO, base_url=server.base_url)
    assert next(chunks).startswith("tick")
    chunks.close()
    assert backend.stopped.wait(timeout=1.0)


async def test_the_connection_is_cut_not_drained() -> None:
    # The raw view: the scripted server's writes fail as soon as we leave, and the
    # next request opens a fresh connection rather than reusing a half-read one.
    async def endless(request: RecordedRequest, writer: asyncio.StreamWriter) -> None:
        writer.write(head())
        for _ in range(600):
            writer.write(chunk(b"more "))
            await writer.drain()
            await asyncio.sleep(0.02)

    async with ScriptedServer(endless) as server:
        generator = GPROChat.create_async_generator("", HELLO, base_url=server.base_url)
        await generator.__anext__()
        await generator.aclose()
        deadline = time.monotonic() + 1.0
        while server.disconnects == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert server.disconnects == 1
        generator = GPROChat.create_async_generator("", HELLO, base_url=server.base_url)
        await generator.__anext__()
        await generator.aclose()
        assert server.connections == 2
