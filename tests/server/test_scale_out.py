"""Scale-out: server processes sharing a real redis-server, and Redis dying under them."""

from __future__ import annotations

import logging

import aiohttp
import pytest

from ..conftest import ServerFactory
from ..processes import clean_env, served
from .conftest import RedisProcess
from .helpers import error_message, post, signed


async def test_two_processes_share_replay_and_rate_limit_state(redis_server: RedisProcess) -> None:
    args = ("--redis-url", redis_server.url, "--rate-limit", "6/minute", "--log-level", "warning")
    env = clean_env()
    # One of them runs two worker processes itself: three processes, one state.
    with served(*args, "--workers", "2", env=env) as first, served(*args, env=env) as second:
        body = signed("once only")
        assert (await post(first, body))[0] == 200
        status, _, raw = await post(second, body)
        assert status == 409
        assert error_message(raw).startswith("Signature already used")
        # Two requests counted so far; four more fill the budget of six, whichever serves.
        for index, base_url in enumerate([first, second, first, second]):
            assert (await post(base_url, signed(f"request {index}")))[0] == 200
        status, headers, raw = await post(first, signed("seventh"))
        assert status == 429 and int(headers["Retry-After"]) >= 1
        assert (await post(second, signed("eighth")))[0] == 429


async def _healthz(base_url: str) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as session, session.get(base_url + "/healthz") as response:
        return response.status, await response.json()


async def test_redis_down_fail_closed_answers_503_and_says_why(
    make_server: ServerFactory, redis_server: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    server = make_server(redis_url=redis_server.url, redis_failure="closed")
    assert (await post(server.base_url, signed("before")))[0] == 200
    assert await _healthz(server.base_url) == (200, {
        "status": "ok", "version": "0.1.0", "backend": "echo", "state": "redis",
        "streams_in_flight": 0, "redis": "ok",
    })
    redis_server.stop()
    with caplog.at_level(logging.ERROR, logger="gprochat.server.guard"):
        status, headers, raw = await post(server.base_url, signed("after"))
    assert status == 503
    assert headers["Retry-After"] == "5"
    assert "cannot reach its shared state store (Redis)" in error_message(raw)
    assert "fail-closed" in caplog.text and "rate limit" in caplog.text
    status, health = await _healthz(server.base_url)
    assert (status, health["redis"], health["status"]) == (503, "unreachable", "unavailable")


async def test_redis_down_fail_open_keeps_serving_and_says_so(
    make_server: ServerFactory, redis_server: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    server = make_server(redis_url=redis_server.url, redis_failure="open", rate_limit="100/minute")
    redis_server.stop()
    body = signed("served without Redis")
    with caplog.at_level(logging.ERROR, logger="gprochat.server.guard"):
        status, _, answer = await post(server.base_url, body)
    assert status == 200 and answer.decode().endswith("served without Redis")
    assert "fail-open" in caplog.text
    status, health = await _healthz(server.base_url)
    assert (status, health["redis"], health["status"]) == (200, "unreachable", "degraded")
