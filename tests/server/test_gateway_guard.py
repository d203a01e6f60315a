"""The server guard's limits apply to the gateway too, answered in OpenAI's error shape."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp

from gprochat.server import ServerConfig
from gprochat.server.backends import Backend, Conversation, EchoBackend

from ..conftest import ServerFactory
from .test_gateway import HELLO, post


async def test_rate_limit_is_429_in_openai_shape(make_server: ServerFactory) -> None:
    server = make_server(ServerConfig(rate_limit="2/minute"))
    body = {"model": "echo", "messages": HELLO}
    assert (await post(server, body))[0] == 200
    assert (await post(server, body))[0] == 200
    status, error, headers = await post(server, body)
    assert status == 429
    assert error["error"]["code"] == "rate_limit_exceeded"
    assert error["error"]["type"] == "rate_limit_exceeded"
    assert int(headers["Retry-After"]) >= 1


async def test_declared_body_too_large_is_413(make_server: ServerFactory) -> None:
    server = make_server(ServerConfig(max_body_bytes=1000))
    body = {"model": "echo", "messages": [{"role": "user", "content": "x" * 5000}]}
    status, error, _ = await post(server, body)
    assert status == 413
    assert error["error"]["code"] == "request_too_large"


async def test_concurrent_streams_beyond_the_limit_get_503(make_server: ServerFactory) -> None:
    server = make_server(ServerConfig(max_streams=1), backend=EchoBackend(delay=0.1, words_per_chunk=1))
    body = {"model": "echo", "messages": HELLO, "stream": True}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{server.base_url}/v1/chat/completions", json=body) as first:
            assert first.status == 200
            await first.content.readline()  # the first stream is open
            status, error, headers = await post(server, body)
            assert status == 503
            assert error["error"]["type"] == "server_error"
            assert headers["Retry-After"] == "1"
            await first.read()
    # The slot is free again once the stream has ended.
    for _ in range(50):
        status, _, _ = await post(server, {**body, "stream": False})
        if status == 200:
            break
        await asyncio.sleep(0.05)
    assert status == 200


class BrokenBackend(Backend):
    name = "broken"

    def stream(self, conversation: Conversation) -> AsyncIterator[str]:
        raise RuntimeError("misconfigured backend")


async def test_backend_raising_at_once_frees_its_stream_slot(make_server: ServerFactory) -> None:
    server = make_server(ServerConfig(max_streams=1), backend=BrokenBackend())
    body = {"model": "broken", "messages": HELLO}
    for _ in range(3):  # a leaked slot would turn the second request into a 503
        status, error, _ = await post(server, body)
        assert status == 500
        assert "misconfigured backend" not in error["error"]["message"]
        assert error["error"]["code"] == "backend_error"
