"""Retries: what is retried, how long we wait, and that text is never duplicated."""

from __future__ import annotations

import asyncio
import email.utils
import json
import time

import pytest

from gprochat import (
    BadRequestError,
    ConfigurationError,
    GPROChat,
    IncompleteResponseError,
    ServerError,
    ServiceUnavailableError,
)
from gprochat.protocol import generate_signature, parse_retry_after
from gprochat.providers import _retry

from ..scripted import LAST_CHUNK, RecordedRequest, ScriptedServer, chunk, full_response, head

HELLO = [{"role": "user", "content": "Hello!"}]


def failing_then_ok(*failures: bytes):  # type: ignore[no-untyped-def]
    """A script answering the given raw responses first, then a good answer."""

    async def script(request: RecordedRequest, writer: asyncio.StreamWriter) -> None:
        index = len(script.requests)  # type: ignore[attr-defined]
        script.requests.append(time.monotonic())  # type: ignore[attr-defined]
        if index < len(failures):
            writer.write(failures[index])
        else:
            writer.write(head() + chunk(b"fine") + LAST_CHUNK)

    script.requests = []  # type: ignore[attr-defined]
    return script


def error(status: int, headers: dict[str, str] | None = None) -> bytes:
    return full_response(status, json.dumps({"error": {"message": f"status {status}"}}).encode(), headers)


async def test_503_with_retry_after_is_retried_once_after_the_wait() -> None:
    script = failing_then_ok(error(503, {"Retry-After": "1"}))
    async with ScriptedServer(script) as server:
        text = await GPROChat.create_async("", HELLO, base_url=server.base_url, secret_key="k")
    assert text == "fine"
    assert len(server.requests) == 2
    first, second = script.requests
    assert second - first >= 0.95  # the server's one second, not the 0.5s backoff
    assert second - first < 5
    # Each attempt is signed afresh, with its own timestamp.
    bodies = [request.json() for request in server.requests]
    assert bodies[0]["time"] < bodies[1]["time"]
    for body in bodies:
        assert body["sign"] == generate_signature(body["time"], "Hello!", "k")


async def test_retry_after_as_an_http_date_is_honoured() -> None:
    when = email.utils.formatdate(time.time() + 2, usegmt=True)
    script = failing_then_ok(error(429, {"Retry-After": when}))
    async with ScriptedServer(script) as server:
        assert await GPROChat.create_async("", HELLO, base_url=server.base_url) == "fine"
    first, second = script.requests
    # The date has one-second resolution: somewhere between 1 and 2 seconds from now.
    assert 0.9 <= second - first < 5


async def test_retry_after_is_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_retry, "MAX_RETRY_AFTER", 0.2)
    script = failing_then_ok(error(503, {"Retry-After": "3600"}))
    async with ScriptedServer(script) as server:
        assert await GPROChat.create_async("", HELLO, base_url=server.base_url) == "fine"
    first, second = script.requests
    assert second - first < 2


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504])
async def test_retryable_statuses(status: int, monkeypatch: pytest.MonkeyPatch) -> None:
    script = failing_then_ok(error(status, {"Retry-After": "0"}))
    async with ScriptedServer(script) as server:
        assert await GPROChat.create_async("", HELLO, base_url=server.base_url) == "fine"
    assert len(server.requests) == 2


async def test_client_errors_are_not_retried() -> None:
    script = failing_then_ok(error(400))
    async with ScriptedServer(script) as server:
        with pytest.raises(BadRequestError) as info:
            await GPROChat.create_async("", HELLO, base_url=server.base_url)
    assert len(server.requests) == 1
    assert "attempts" not in str(info.value)


async def test_when_retries_run_out_the_last_error_names_the_attempts() -> None:
    script = failing_then_ok(*[error(500, {"Retry-After": "0"})] * 3)
    async with ScriptedServer(script) as server:
        with pytest.raises(ServerError) as info:
            await GPROChat.create_async("", HELLO, base_url=server.base_url, max_retries=2)
    assert len(server.requests) == 3
    assert info.value.attempts == 3
    assert str(info.value).endswith("(after 3 attempts)")


async def test_backoff_grows_between_attempts() -> None:
    script = failing_then_ok(error(502), error(502))
    async with ScriptedServer(script) as server:
        assert await GPROChat.create_async("", HELLO, base_url=server.base_url) == "fine"
    first, second, third = script.requests
    assert 0.45 <= second - first <= 2  # 0.5s plus jitter
    assert 0.95 <= third - second <= 3  # 1s plus jitter


async def test_max_retries_zero_makes_one_attempt() -> None:
    script = failing_then_ok(error(503))
    async with ScriptedServer(script) as server:
        with pytest.raises(ServiceUnavailableError):
            await GPROChat.create_async("", HELLO, base_url=server.base_url, max_retries=0)
    assert len(server.requests) == 1


async def test_max_retries_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPROCHAT_MAX_RETRIES", "0")
    script = failing_then_ok(error(503))
    async with ScriptedServer(script) as server:
        with pytest.raises(ServiceUnavailableError):
            await GPROChat.create_async("", HELLO, base_url=server.base_url)
    assert len(server.requests) == 1


@pytest.mark.parametrize("bad", [-1, 1.5, "two"])
async def test_bad_max_retries_is_refused(bad: object) -> None:
    with pytest.raises(ConfigurationError, match="max_retries"):
        await GPROChat.create_async("", HELLO, base_url="http://127.0.0.1:9", max_retries=bad)


async def test_a_connection_dropped_before_any_answer_is_retried() -> None:
    async def script(request: RecordedRequest, writer: asyncio.StreamWriter) -> None:
        if request.connection == 1:
            writer.close()  # like a stale keep-alive connection the server gave up on
        else:
            writer.write(head() + chunk(b"fine") + LAST_CHUNK)

    async with ScriptedServer(script) as server:
        assert await GPROChat.create_async("", HELLO, base_url=server.base_url) == "fine"
    assert len(server.requests) == 2


async def test_a_body_cut_after_text_is_raised_and_never_retried() -> None:
    async def script(request: RecordedRequest, writer: asyncio.StreamWriter) -> None:
        writer.write(head() + chunk(b"The first half"))
        await writer.drain()
        writer.close()

    received: list[str] = []
    async with ScriptedServer(script) as server:
        with pytest.raises(IncompleteResponseError) as info:
            async for text in GPROChat.create_async_generator("", HELLO, base_url=server.base_url):
                received.append(text)
    assert received == ["The first half"]  # once, not repeated by a retry
    assert info.value.partial_text == "The first half"
    assert len(server.requests) == 1


def test_parse_retry_after() -> None:
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after("-5") == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0) == 0.0
