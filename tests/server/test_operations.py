"""Operations: /metrics, /healthz, backend error statuses, quiet expected aborts (in-process);
the log's format and the start-up line (``gprochat serve`` processes, on a pty and on a pipe)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import aiohttp
import pexpect
import pytest

from gprochat.errors import BackendError
from gprochat.server.backends import Backend, Conversation

from ..conftest import ServerFactory
from ..processes import GPROCHAT, clean_env, stop_process
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


# -- the log's format and the start-up line -------------------------------------------

_TEXT_START = re.compile(r"INFO gprochat\.server: gprochat \S+ serving on (http://127\.0\.0\.1:(\d+)) ")


def _get_ok(url: str) -> None:
    with urllib.request.urlopen(url, timeout=10) as reply:
        assert reply.status == 200


def _get_refused(url: str, status: int) -> None:
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(url, timeout=10)
    caught.value.close()
    assert caught.value.code == status


def _serve_on_a_terminal(*args: str, **env: str) -> pexpect.spawn:
    """``gprochat serve --port 0 ARGS`` with stderr on a pty, as in a terminal."""
    return pexpect.spawn(sys.executable, [*GPROCHAT[1:], "serve", "--port", "0", *args],
                         env=clean_env(**env), encoding="utf-8", timeout=60)


def _stop_terminal(child: pexpect.spawn) -> str:
    child.sendintr()
    child.expect(pexpect.EOF)
    return str(child.before)


def test_on_a_terminal_the_log_is_readable_lines_and_the_banner_has_the_links() -> None:
    child = _serve_on_a_terminal()
    try:
        child.expect(_TEXT_START)
        url = child.match.group(1)
        child.expect(r"\(echo backend, 1 worker, state in memory\); chat page (\S+), "
                     r"OpenAI-compatible API (\S+)\r\n")
        assert (child.match.group(1), child.match.group(2)) == (url + "/", url + "/v1")
        _get_ok(url + "/healthz")
        child.expect(r"INFO gprochat\.access: GET /healthz 200 in [\d.]+ ms \(first byte [\d.]+ ms\), "
                     r"\d+ B to 127\.0\.0\.1\r\n")
        _get_refused(url + "/healthz?" + "a" * 9000, 414)
        child.expect(r"INFO gprochat\.access: GET other 414 in [\d.]+ ms, 0 B to 127\.0\.0\.1, "
                     r"refused: url_too_long \(URL too long: more than 8192 bytes")
    finally:
        rest = _stop_terminal(child)
    assert "{" not in rest  # no JSON line anywhere
    assert "INFO uvicorn: Shutting down" in rest


def test_on_a_terminal_json_on_request() -> None:
    child = _serve_on_a_terminal("--log-format", "json")
    try:
        child.expect(r'\{[^\r\n]*"event": "started"[^\r\n]*\}\r\n')
        started = json.loads(child.after)
        assert started["page_url"] == started["url"] + "/"
    finally:
        _stop_terminal(child)


@contextmanager
def _serve_on_a_pipe(*args: str, **env: str) -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    """``gprochat serve --port 0 ARGS`` with stderr on a pipe; yields it and its lines so far."""
    process = subprocess.Popen([*GPROCHAT, "serve", "--port", "0", *args], env=clean_env(**env),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    try:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)
            if "serving on" in line:
                break
        assert lines and "serving on" in lines[-1], f"no start-up line: {lines}"
        yield process, lines
    finally:
        stop_process(process)
        if process.stderr:
            lines += process.stderr.readlines()
            process.stderr.close()


def test_on_a_pipe_the_log_is_json_and_the_start_up_line_names_the_links_and_model() -> None:
    with _serve_on_a_pipe("--backend", "openai", "--openai-base-url", "http://127.0.0.1:9/v1",
                          "--openai-model", "my-model") as (_, lines):
        started = json.loads(lines[-1])
        assert started["event"] == "started" and started["backend"] == "openai"
        assert started["model"] == "my-model"
        assert started["page_url"] == started["url"] + "/"
        assert started["gateway_url"] == started["url"] + "/v1"
        assert "(openai backend, model my-model, 1 worker, state in memory); chat page " in started["message"]
        _get_ok(started["url"] + "/healthz")
    entries = [json.loads(line) for line in lines if line.strip()]  # every line is JSON
    [access] = [e for e in entries if e["logger"] == "gprochat.access"]
    assert (access["route"], access["status"], access["outcome"]) == ("/healthz", 200, "complete")


def test_without_the_page_and_gateway_the_start_up_line_has_no_links() -> None:
    with _serve_on_a_pipe("--no-web", "--no-gateway") as (_, lines):
        started = json.loads(lines[-1])
        assert started["page_url"] is None and started["gateway_url"] is None
        assert started["message"].endswith("state in memory)")


def test_the_log_format_variable_forces_text_on_a_pipe() -> None:
    with _serve_on_a_pipe(GPROCHAT_LOG_FORMAT="text") as (_, lines):
        match = _TEXT_START.search(lines[-1])
        assert match, lines
        _get_ok(match.group(1) + "/healthz")
    # The lines logged until the server stopped are all read by then.
    assert not any(line.startswith("{") for line in lines), lines
    assert any("gprochat.access: GET /healthz 200 in" in line for line in lines), lines
