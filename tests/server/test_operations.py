"""Operations in-process: /metrics, /healthz, backend error statuses, quiet expected aborts."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator

import aiohttp
import pytest

from gprochat.errors import BackendError
from gprochat.server.backends import Backend, Conversation

from ..conftest import ServerFactory
from .helpers import error_message, post, signed


class ScriptedBackend(Backend):
    """Yields ``texts``, then raises ``error`` (if any)."""

    name = "scripted"

    def __init__(self, texts: list[str], error: Exception | None = None) -> None:
        self.texts = texts
        self.error = error

    async def stream(self, conversation: Conversation) -> AsyncIterator[str]:
        for text in self.texts:
            yield text
            await asyncio.sleep(0.01)
        if self.error is not None:
            raise self.error


async def _get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text()


def _sample(metrics: str, name: str, **labels: str) -> float:
    for line in metrics.splitlines():
        match = re.fullmatch(rf"{name}(?:\{{(.*)\}})? (\S+)", line)
        if match:
            found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
            if all(found.get(key) == value for key, value in labels.items()):
                return float(match.group(2))
    raise AssertionError(f"no sample {name}{labels} in:\n{metrics}")


async def test_metrics_count_requests_bytes_first_bytes_and_backend_errors(
    make_server: ServerFactory,
) -> None:
    ok_server = make_server(rate_limit=None)
    status, _, answer = await post(ok_server.base_url, signed("counted"))
    assert status == 200
    await post(ok_server.base_url, signed("forged", secret="nope"))
    _, metrics = await _get(ok_server.base_url + "/metrics")
    requests = "gprochat_http_requests_total"
    assert _sample(metrics, requests, route="/api/generate", status="200") == 1
    assert _sample(metrics, requests, route="/api/generate", status="401") == 1
    assert _sample(metrics, "gprochat_response_body_bytes_total", route="/api/generate") >= len(answer)
    assert _sample(metrics, "gprochat_time_to_first_byte_seconds_count", route="/api/generate") == 1
    assert _sample(metrics, "gprochat_streams_in_flight") == 0

    failing = make_server(backend=ScriptedBackend(["partial "], RuntimeError("boom")), rate_limit=None)
    async with aiohttp.ClientSession() as session:
        async with session.post(failing.base_url + "/api/generate",
                                data=json.dumps(signed("x"))) as response:
            with pytest.raises(aiohttp.ClientPayloadError):
                await response.read()
    _, metrics = await _get(failing.base_url + "/metrics")
    assert _sample(metrics, "gprochat_backend_errors_total", backend="scripted", stage="mid_stream") == 1


async def test_healthz_names_the_backend_and_the_state_store(make_server: ServerFactory) -> None:
    server = make_server()
    status, text = await _get(server.base_url + "/healthz")
    assert status == 200
    assert '"backend":"echo"' in text and '"state":"memory"' in text and "redis" not in text


async def test_mid_stream_abort_logs_one_line_and_no_traceback(
    make_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    server = make_server(backend=ScriptedBackend(["partial "], RuntimeError("upstream hung up")))
    # uvicorn's default logging config does not propagate its loggers to the root.
    uvicorn_log = logging.getLogger("uvicorn.error")
    uvicorn_log.addHandler(caplog.handler)
    try:
        await _abort_one_stream(server.base_url, caplog)
    finally:
        uvicorn_log.removeHandler(caplog.handler)
    assert "failed mid-answer (upstream hung up)" in caplog.text
    assert "Exception in ASGI application" not in caplog.text
    assert "Traceback" not in caplog.text


async def _abort_one_stream(base_url: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        async with aiohttp.ClientSession() as session:
            async with session.post(base_url + "/api/generate",
                                    data=json.dumps(signed("x"))) as response:
                with pytest.raises(aiohttp.ClientPayloadError):
                    await response.read()
        await asyncio.sleep(0.2)  # the server logs after the connection is cut


@pytest.mark.parametrize(
    ("error", "status", "retry_after", "message"),
    [
        (BackendError("invalid api key", status=401), 502, None, "server configuration error"),
        (BackendError("slow down", status=429, retry_after=7.2), 429, "8", "slow down"),
        (BackendError("overloaded", status=503, retry_after=3), 503, "3", "overloaded"),
        (BackendError("weird", status=999), 502, None, "weird"),
    ],
)
async def test_backend_errors_map_to_clear_statuses(
    make_server: ServerFactory, error: BackendError, status: int, retry_after: str | None,
    message: str,
) -> None:
    server = make_server(backend=ScriptedBackend([], error))
    got, headers, raw = await post(server.base_url, signed())
    assert got == status
    assert headers.get("Retry-After") == retry_after
    assert message in error_message(raw)
    _, metrics = await _get(server.base_url + "/metrics")
    assert _sample(metrics, "gprochat_backend_errors_total", stage="before_text") == 1


def _access_records(caplog: pytest.LogCaptureFixture, route: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "gprochat.access" and getattr(r, "route", "") == route]


async def _wait_for_access(caplog: pytest.LogCaptureFixture, route: str, count: int = 1) -> None:
    for _ in range(200):
        if len(_access_records(caplog, route)) >= count:
            return
        await asyncio.sleep(0.02)


async def test_access_log_says_complete_only_for_completed_answers(
    make_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gprochat.access")
    slow = ScriptedBackend([f"word{n} " for n in range(300)])
    server = make_server(backend=slow)
    # A client that leaves after the first chunk: client_gone, logged as 499.
    async with aiohttp.ClientSession() as session:
        async with session.post(server.base_url + "/api/generate", data=json.dumps(signed())) as response:
            assert response.status == 200
            await response.content.readany()
    await _wait_for_access(caplog, "/api/generate")
    [gone] = _access_records(caplog, "/api/generate")
    assert (gone.outcome, gone.status) == ("client_gone", 499)  # type: ignore[attr-defined]
    _, metrics = await _get(server.base_url + "/metrics")
    assert 'route="/api/generate",status="499"' in metrics

    # A backend failing mid-answer: aborted.
    failing = make_server(backend=ScriptedBackend(["partial "], RuntimeError("upstream hung up")))
    async with aiohttp.ClientSession() as session:
        async with session.post(failing.base_url + "/api/generate", data=json.dumps(signed())) as response:
            with pytest.raises(aiohttp.ClientPayloadError):
                await response.read()
    await _wait_for_access(caplog, "/api/generate", 2)
    assert _access_records(caplog, "/api/generate")[1].outcome == "aborted"  # type: ignore[attr-defined]

    # A whole answer: complete.
    whole = make_server()
    status, _, _ = await post(whole.base_url, signed())
    assert status == 200
    await _wait_for_access(caplog, "/api/generate", 3)
    done = _access_records(caplog, "/api/generate")[2]
    assert (done.outcome, done.status) == ("complete", 200)  # type: ignore[attr-defined]
