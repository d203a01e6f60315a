"""The HTTP backends' upstream connection pool: sized from --max-streams, its wait reported as such.

The scale test streams 1,000 slow answers at once through our server and the gemini
backend from an upstream on loopback (benchmark-style numbers: docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import json
import resource
import time
from collections.abc import AsyncIterator
from contextlib import aclosing

import aiohttp
import pytest

from gprochat.errors import BackendError
from gprochat.server import BackgroundServer, ServerConfig, create_app
from gprochat.server.backends import Conversation, GeminiBackend, OpenAIBackend

from ..helpers import signed

STREAMS = 1000
EVENTS = 3
PAUSE = 1.0  # seconds between the upstream's events: each answer takes ~2 s


def _sse(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _openai_event(text: str | None) -> bytes:
    if text is None:
        return _sse(b"data: [DONE]\n\n")
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
             "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
    return _sse(b"data: " + json.dumps(chunk).encode() + b"\n\n")


def _event(text: str, finish: str | None = None) -> bytes:
    candidate: dict[str, object] = {"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    data = b"data: " + json.dumps({"candidates": [candidate]}).encode() + b"\r\n\r\n"
    return b"%x\r\n%s\r\n" % (len(data), data)


class SlowGemini:
    """A Gemini-shaped upstream on raw asyncio streams: EVENTS events PAUSE s apart per answer.

    Counts the answers open at once, so the test sees how many upstream connections
    the backend really held (aiohttp's default pool would cap it at 100).
    ``openai=True`` speaks OpenAI's chat.completion.chunk events instead.
    """

    def __init__(self, openai: bool = False) -> None:
        self.openai = openai
        self.open = 0
        self.most_open = 0
        self.served = 0
        self.url = ""
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, backlog=4096)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
                self.open += 1
                self.most_open = max(self.most_open, self.open)
                try:
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                                 b"Transfer-Encoding: chunked\r\n\r\n")
                    for index in range(EVENTS):
                        last = index == EVENTS - 1
                        if self.openai:
                            writer.write(_openai_event(f"part{index} "))
                            if last:
                                writer.write(_openai_event(None))
                        else:
                            writer.write(_event(f"part{index} ", "STOP" if last else None))
                        await writer.drain()
                        if not last:
                            await asyncio.sleep(PAUSE)
                    writer.write(b"0\r\n\r\n")
                    await writer.drain()
                    self.served += 1
                finally:
                    self.open -= 1
        except (asyncio.IncompleteReadError, ConnectionError, StopIteration):
            pass
        finally:
            writer.close()


@pytest.fixture
async def slow_gemini() -> AsyncIterator[SlowGemini]:
    upstream = SlowGemini()
    await upstream.start()
    yield upstream
    await upstream.stop()


def _raise_nofile(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    # Four sockets per stream in this one process: client, server, backend, upstream.
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < 4 * STREAMS + 200:
        pytest.skip("RLIMIT_NOFILE cannot be raised far enough for 1,000 streams")


async def test_1000_concurrent_slow_answers_through_the_gemini_backend(slow_gemini: SlowGemini) -> None:
    _raise_nofile(4 * STREAMS + 1000)
    config = ServerConfig(
        backend="gemini",
        backend_options={"api_key": "test-key", "base_url": slow_gemini.url},
        max_streams=STREAMS,
        rate_limit=None,
        max_connections=STREAMS + 100,
    )
    assert config.backend_options["max_connections"] >= STREAMS
    errors: list[str] = []
    texts: list[str] = []
    started = time.monotonic()
    with BackgroundServer(config) as server:
        url = server.base_url + "/api/generate"
        connector = aiohttp.TCPConnector(limit=0)
        timeout = aiohttp.ClientTimeout(total=120)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

            async def one(index: int) -> None:
                body = json.dumps(signed(f"question {index}")).encode()
                try:
                    async with session.post(url, data=body) as response:
                        text = (await response.read()).decode()
                        if response.status != 200:
                            errors.append(f"{response.status}: {text[:200]}")
                        else:
                            texts.append(text)
                except aiohttp.ClientError as exc:
                    errors.append(repr(exc))

            await asyncio.gather(*(one(index) for index in range(STREAMS)))
    took = time.monotonic() - started
    assert errors == [], f"{len(errors)} errors, e.g. {errors[:3]}"
    assert len(texts) == STREAMS
    assert all(text == "part0 part1 part2 " for text in texts)
    assert slow_gemini.served == STREAMS
    # Far beyond aiohttp's default pool of 100: the answers really ran side by side.
    assert slow_gemini.most_open > 500, slow_gemini.most_open
    print(f"\n1,000 slow answers: {took:.1f} s, at most {slow_gemini.most_open} upstream at once")


async def test_500_concurrent_slow_streams_through_the_gateway_and_the_openai_backend() -> None:
    streams = 500
    _raise_nofile(4 * streams + 1000)
    upstream = SlowGemini(openai=True)
    await upstream.start()
    config = ServerConfig(backend="openai", backend_options={"base_url": upstream.url + "/v1", "model": "m"},
                          max_streams=streams, rate_limit=None)
    errors: list[str] = []
    texts: list[str] = []
    try:
        with BackgroundServer(config) as server:
            url = server.base_url + "/v1/chat/completions"
            connector = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(connector=connector,
                                             timeout=aiohttp.ClientTimeout(total=120)) as session:

                async def one(index: int) -> None:
                    body = {"model": "m", "stream": True,
                            "messages": [{"role": "user", "content": f"question {index}"}]}
                    try:
                        async with session.post(url, json=body) as response:
                            raw = (await response.read()).decode()
                    except aiohttp.ClientError as exc:
                        errors.append(repr(exc))
                        return
                    if response.status != 200 or not raw.rstrip().endswith("data: [DONE]"):
                        errors.append(f"{response.status}: {raw[:200]}")
                        return
                    texts.append("".join(
                        choice["delta"].get("content") or ""
                        for line in raw.splitlines()
                        if line.startswith("data: {")
                        for choice in json.loads(line[6:])["choices"]
                    ))

                await asyncio.gather(*(one(index) for index in range(streams)))
    finally:
        await upstream.stop()
    assert errors == [], f"{len(errors)} errors, e.g. {errors[:3]}"
    assert texts == ["part0 part1 part2 "] * streams
    assert upstream.most_open > 250, upstream.most_open


def test_the_pool_is_sized_from_max_streams() -> None:
    options = {"api_key": "k", "base_url": "http://127.0.0.1:9"}
    assert ServerConfig(backend="gemini", backend_options=options, max_streams=500).backend_options[
        "max_connections"
    ] == 516
    assert ServerConfig(backend="openai", backend_options=options, max_streams=0).backend_options[
        "max_connections"
    ] == 0  # no stream limit: no pool limit
    explicit = {**options, "max_connections": 7}
    assert ServerConfig(backend="gemini", backend_options=explicit).backend_options["max_connections"] == 7
    assert "max_connections" not in ServerConfig(backend="echo").backend_options
    app = create_app(ServerConfig(backend="gemini", backend_options=options, max_streams=300))
    backend = app.state.backend
    assert isinstance(backend, GeminiBackend) and backend.max_connections == 316


@pytest.mark.parametrize("backend_class", [GeminiBackend, OpenAIBackend])
async def test_a_full_pool_is_reported_as_a_full_pool(upstream, closing, backend_class) -> None:
    # Every answer hangs: two hold the only two connections, the third waits for one.
    upstream.respond_events([b": waiting\n\n"], then="hang")
    backend = closing(backend_class(api_key="k", base_url=upstream.url, max_connections=2,
                                    pool_timeout=0.5, connect_timeout=5))
    holders = [aiter(backend.stream(Conversation(message="hold"))) for _ in range(2)]
    tasks = [asyncio.ensure_future(anext(holder)) for holder in holders]
    await asyncio.sleep(0.3)
    started = time.monotonic()
    with pytest.raises(BackendError) as caught:
        async with aclosing(backend.stream(Conversation(message="third"))) as third:
            async for _ in third:
                pass
    waited = time.monotonic() - started
    assert caught.value.status == 503 and caught.value.retry_after == 1
    assert "connection pool is full" in caught.value.message
    assert "all 2 connections" in caught.value.message and "connect timeout" not in caught.value.message
    assert 0.4 < waited < 3
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for holder in holders:
        await holder.aclose()  # type: ignore[attr-defined]


async def test_a_connection_freed_in_time_is_used(upstream, closing) -> None:
    upstream.respond_events([b'data: {"candidates": [{"content": {"parts": [{"text": "ok"}]}, '
                             b'"finishReason": "STOP"}]}\r\n\r\n'], pause=0.3)
    backend = closing(GeminiBackend(api_key="k", base_url=upstream.url, max_connections=1,
                                    pool_timeout=10))

    async def answer() -> str:
        return "".join([text async for text in backend.stream(Conversation(message="q"))])

    # One connection, three answers: they take turns instead of failing.
    assert await asyncio.gather(answer(), answer(), answer()) == ["ok", "ok", "ok"]
