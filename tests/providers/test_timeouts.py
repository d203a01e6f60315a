"""Connect, idle-read and total time limits: each fires against a server that misbehaves, by name."""

from __future__ import annotations

import asyncio
import builtins
import re

import pytest

from gprochat import ConfigurationError, GPROChat, Timeout, TimeoutError
from gprochat.providers._timeouts import resolve_timeout

from ..scripted import RecordedRequest, ScriptedServer, chunk, head

HELLO = [{"role": "user", "content": "Hello!"}]


async def collect(received: list[str], base_url: str, **kwargs: object) -> None:
    async for text in GPROChat.create_async_generator("", HELLO, base_url=base_url, **kwargs):  # type: ignore[arg-type]
        received.append(text)


async def stall_before_answering(request: RecordedRequest, writer: asyncio.StreamWriter) -> None:
    await asyncio.sleep(30)


async def stall_after_some_text(request: RecordedRequest, writer: asyncio.StreamWriter) -> None:
    writer.write(head() + chunk(b"Once upon a time"))
    await writer.drain()
    await asyncio.sleep(30)


async def trickle_forever(request: RecordedRequest, writer: asyncio.StreamWriter) -> None:
    writer.write(head())
    while True:
        writer.write(chunk(b"."))
        await writer.drain()
        await asyncio.sleep(0.1)


async def test_read_timeout_fires_with_its_name_when_the_server_stalls() -> None:
    async with ScriptedServer(stall_before_answering) as server:
        url = server.base_url
        with pytest.raises(TimeoutError) as info:
            await collect([], url, timeout=Timeout(read=0.5), max_retries=0)
    error = info.value
    assert isinstance(error, builtins.TimeoutError)
    assert error.limit == "read" and error.seconds == 0.5
    assert str(error).startswith(f"read timeout: no data for 0.5s from {url}/api/generate")


async def test_read_timeout_after_text_is_raised_not_retried() -> None:
    received: list[str] = []
    async with ScriptedServer(stall_after_some_text) as server:
        with pytest.raises(TimeoutError) as info:
            await collect(received, server.base_url, timeout=Timeout(read=0.5), max_retries=3)
    assert received == ["Once upon a time"]
    assert info.value.limit == "read"
    assert "after 16 characters" in str(info.value)
    assert len(server.requests) == 1


async def test_a_steady_stream_is_not_a_read_timeout_but_the_total_limit_fires() -> None:
    received: list[str] = []
    async with ScriptedServer(trickle_forever) as server:
        with pytest.raises(TimeoutError) as info:
            await collect(received, server.base_url, timeout=Timeout(read=0.5, total=1.5))
    assert info.value.limit == "total" and info.value.seconds == 1.5
    assert str(info.value).startswith("total timeout:")
    # Ten chunks a second for 1.5s, each gap well under the 0.5s read limit.
    assert len(received) >= 5


async def test_connect_timeout_fires_with_its_name() -> None:
    # A "SOCKS proxy" that accepts the TCP connection and never answers the handshake:
    # the connection is never established, which is what the connect limit is for.
    writers: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await reader.read()
        writer.close()

    listener = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        with pytest.raises(TimeoutError) as info:
            await collect(
                [], "http://127.0.0.1:9", proxy=f"socks5://127.0.0.1:{port}",
                timeout=Timeout(connect=0.5), max_retries=0,
            )
    finally:
        listener.close()
        for writer in writers:  # closed here, on this loop, whatever the client did
            writer.close()
    assert info.value.limit == "connect" and info.value.seconds == 0.5
    assert str(info.value).startswith("connect timeout: could not connect to http://127.0.0.1:9")


async def test_read_timeout_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPROCHAT_READ_TIMEOUT", "0.4")
    monkeypatch.setenv("GPROCHAT_MAX_RETRIES", "0")
    async with ScriptedServer(stall_before_answering) as server:
        with pytest.raises(TimeoutError) as info:
            await collect([], server.base_url)
    assert info.value.limit == "read" and info.value.seconds == 0.4


def test_a_number_sets_connect_and_read_and_env_sets_the_rest(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_timeout(None) == Timeout(connect=10, read=60, total=None)
    monkeypatch.setenv("GPROCHAT_TOTAL_TIMEOUT", "300")
    monkeypatch.setenv("GPROCHAT_CONNECT_TIMEOUT", "3")
    assert resolve_timeout(None) == Timeout(connect=3, read=60, total=300)
    assert resolve_timeout(5) == Timeout(connect=5, read=5, total=300)
    monkeypatch.setenv("GPROCHAT_READ_TIMEOUT", "none")
    assert resolve_timeout(None).read is None
    explicit = Timeout(read=1)
    assert resolve_timeout(explicit) is explicit


@pytest.mark.parametrize("bad", [0, -1, "10", True])
def test_bad_timeouts_are_refused_by_name(bad: object) -> None:
    with pytest.raises(ConfigurationError, match=r"(?i)timeout.*invalid"):
        resolve_timeout(bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=re.escape(f"Timeout read={bad!r} is invalid")):
        Timeout(read=bad)  # type: ignore[arg-type]


def test_bad_timeout_in_the_environment_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPROCHAT_READ_TIMEOUT", "soon")
    with pytest.raises(ConfigurationError, match="GPROCHAT_READ_TIMEOUT='soon'"):
        resolve_timeout(None)


async def test_bad_timeout_is_refused_before_any_request() -> None:
    async with ScriptedServer(stall_before_answering) as server:
        with pytest.raises(ConfigurationError):
            await collect([], server.base_url, timeout="soon")
    assert server.requests == []
