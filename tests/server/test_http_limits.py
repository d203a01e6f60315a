"""The HTTP layer (server/http.py) over raw sockets: framing, limits, timeouts, the 413 drain.

Each probe talks bytes to our real server on 127.0.0.1 through the suite's one raw
client (``hostile/rawhttp.py``) and reads its answers until the server closes (a
server that keeps the connection open fails the probe); then the server must still
answer a good request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Sequence

import pytest

from gprochat.server import BackgroundServer, ServerConfig
from gprochat.server.backends import Backend, Conversation

from ..conftest import ServerFactory
from .helpers import raw_exchange_until_closed, signed
from .hostile.rawhttp import Answer, Hang, connect, exchange

GOOD = json.dumps(signed("Hi")).encode()  # for requests refused before the signature is checked


def fresh() -> bytes:
    """A body signed now: one meant to be answered must be inside the server's time
    window (GOOD was signed at import, minutes earlier in a full run) and never replayed."""
    return json.dumps(signed("Hi")).encode()


Request = bytes | Sequence[bytes | float]  # bytes, or pieces with pauses (seconds) between


async def until_closed(server: BackgroundServer, data: Request) -> tuple[list[Answer], float]:
    """Send ``data``; the answers, read until the server closes, and the seconds that took."""
    return await raw_exchange_until_closed(server.base_url, data)


async def one_answer(server: BackgroundServer, data: Request) -> tuple[Answer, float]:
    """Send ``data``; its one answer (an HTTP/1.1 one), then the close, and the seconds until it."""
    [answer], took = await until_closed(server, data)
    assert answer.version == "HTTP/1.1", answer
    return answer, took


def drip(data: bytes, pause: float) -> list[bytes | float]:
    """``data`` a byte at a time, ``pause`` seconds apart."""
    return [piece for byte in data for piece in (bytes([byte]), pause)]


def body_message(answer: Answer) -> str:
    return str(answer.json()["error"]["message"])


def still_serves(server: BackgroundServer) -> None:
    body = json.dumps(signed("ok")).encode()
    request = urllib.request.Request(server.base_url + "/api/generate", data=body)
    with urllib.request.urlopen(request, timeout=15) as reply:
        assert reply.status == 200 and reply.read()


def post_head(path: str = "/api/generate", extra: bytes = b"", length: int | None = None) -> bytes:
    size = len(GOOD) if length is None else length
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\n"
        f"Content-Length: {size}\r\n"
    ).encode() + extra + b"\r\n"


@pytest.fixture
def server(make_server: ServerFactory) -> BackgroundServer:
    return make_server(ServerConfig(rate_limit=None, header_timeout=2, body_idle_timeout=1.5,
                                    body_timeout=4, keepalive_timeout=1.5, drain_timeout=5))


# -- framing (RFC 9112) --------------------------------------------------------


async def test_content_length_with_transfer_encoding_is_refused_and_closed(server: BackgroundServer) -> None:
    smuggle = b"0\r\n\r\nPOST /api/generate HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
    head = post_head(extra=b"Transfer-Encoding: chunked\r\n", length=len(smuggle))
    # One answer, then the close: the smuggled request was never served.
    answer, _ = await one_answer(server, head + smuggle)
    assert answer.status == 400
    assert "Transfer-Encoding" in body_message(answer)
    still_serves(server)


async def test_a_chunk_size_of_2_to_the_80_fails_at_once(server: BackgroundServer) -> None:
    head = b"POST /api/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    answer, took = await one_answer(server, head + b"%x\r\n" % 2**80)
    assert answer.status == 400 and "Chunk size" in body_message(answer)
    assert took < 1.4  # before any timeout (the shortest, body idle, is 1.5 s)
    still_serves(server)


@pytest.mark.parametrize("coding", [b"gzip", b"chunked, gzip", b"identity"])
async def test_a_transfer_encoding_not_ending_in_chunked_is_refused(
    server: BackgroundServer, coding: bytes
) -> None:
    head = b"POST /api/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: " + coding + b"\r\n\r\n"
    answer, _ = await one_answer(server, head + b"abc")
    assert answer.status == 400


async def test_two_different_content_lengths_are_refused(server: BackgroundServer) -> None:
    answer, _ = await one_answer(server, post_head(extra=b"Content-Length: 3\r\n") + GOOD)
    assert answer.status == 400


async def test_an_upgrade_without_a_body_is_served_as_http_1_1(server: BackgroundServer) -> None:
    answer, _ = await one_answer(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
                                 b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
                                 b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
    assert answer.status == 200


async def test_an_upgrade_with_a_body_is_refused_not_served_without_its_body(
    server: BackgroundServer,
) -> None:
    head = post_head(extra=b"Connection: upgrade\r\nUpgrade: websocket\r\n")
    answer, took = await one_answer(server, head + GOOD)
    assert answer.status == 400 and "Upgrade is not supported" in body_message(answer)
    assert took < 1.4


# -- sizes: 414, 431 -----------------------------------------------------------


async def test_a_100_kb_url_gets_414(server: BackgroundServer) -> None:
    answer, _ = await one_answer(server, b"GET /healthz?" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.status == 414 and "URL too long" in body_message(answer)
    still_serves(server)


async def test_a_url_at_the_limit_is_served(make_server: ServerFactory) -> None:
    server = make_server(ServerConfig(max_url_bytes=200))
    path = b"/healthz?" + b"a" * (200 - len(b"/healthz?"))
    rest = b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    answer, _ = await one_answer(server, b"GET " + path + rest)
    assert answer.status == 200
    answer, _ = await one_answer(server, b"GET " + path + b"a" + rest)
    assert answer.status == 414


async def test_1000_headers_get_431(server: BackgroundServer) -> None:
    headers = b"".join(b"X-H%d: v\r\n" % i for i in range(1000))
    answer, _ = await one_answer(server, post_head(extra=headers) + GOOD)
    assert answer.status == 431 and "Too many request headers" in body_message(answer)
    still_serves(server)


async def test_the_header_count_limit_is_exact(make_server: ServerFactory) -> None:
    server = make_server(ServerConfig(max_header_count=5))
    # Host, Connection and three more: 5 served; one more: 431.
    three = b"A: 1\r\nB: 2\r\nC: 3\r\n"
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    answer, _ = await one_answer(server, head + three + b"\r\n")
    assert answer.status == 200
    answer, _ = await one_answer(server, head + three + b"D: 4\r\n\r\n")
    assert answer.status == 431


@pytest.mark.parametrize("size", [20_000, 100_000, 2_000_000])
async def test_a_huge_header_gets_431(server: BackgroundServer, size: int) -> None:
    answer, _ = await one_answer(server, post_head(extra=b"X-Big: " + b"a" * size + b"\r\n") + GOOD)
    assert answer.status == 431 and "Request headers too large" in body_message(answer)
    still_serves(server)


# -- Host ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "hosts",
    [b"", b"Host: a b\r\n", b"Host: <script>\r\n", b"Host: x\r\nHost: y\r\n", b"Host: ex/ample\r\n",
     b"Host: example.com:80:80\r\n", b"Host: [::1\r\n"],
    ids=["missing", "space", "markup", "two", "slash", "two-ports", "open-bracket"],
)
async def test_an_invalid_host_gets_400(server: BackgroundServer, hosts: bytes) -> None:
    answer, _ = await one_answer(server, b"GET /healthz HTTP/1.1\r\n" + hosts + b"\r\n")
    assert answer.status == 400 and "Host" in body_message(answer)


@pytest.mark.parametrize("host", [b"example.com", b"127.0.0.1:8000", b"[::1]:8000", b"xn--bcher-kva.de"])
async def test_valid_hosts_are_served(server: BackgroundServer, host: bytes) -> None:
    answer, _ = await one_answer(
        server, b"GET /healthz HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n")
    assert answer.status == 200


async def test_http_1_0_without_host_is_served(server: BackgroundServer) -> None:
    answer, _ = await one_answer(server, b"GET /healthz HTTP/1.0\r\n\r\n")
    assert (answer.version, answer.status) == ("HTTP/1.1", 200)


async def test_a_request_line_without_a_version_is_refused(server: BackgroundServer) -> None:
    answer, _ = await one_answer(server, b"GET /healthz\r\n\r\n")  # HTTP/0.9's form; was served 200
    assert answer.status == 400 and "no HTTP version" in body_message(answer)
    assert answer.headers["connection"] == "close"
    still_serves(server)


@pytest.mark.parametrize("garbage", [b"HELLO THERE\r\n\r\n", b"GET /x HTTP/1.1\r\nNoColon\r\n\r\n",
                                     bytes(range(256))])
async def test_a_valid_request_then_garbage_in_one_packet_is_answered_then_refused(
    server: BackgroundServer, caplog: pytest.LogCaptureFixture, garbage: bytes,
) -> None:
    caplog.set_level(logging.INFO, logger="gprochat.access")
    answers, _ = await until_closed(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" + garbage)
    assert [answer.status for answer in answers] == [200, 400], answers
    assert answers[0].json()["status"] == "ok" and "Invalid HTTP request" in answers[1].body.decode()
    [refused] = _refused_lines(caplog)
    assert (refused.status, refused.reason) == (400, "malformed")  # type: ignore[attr-defined]


async def test_a_streamed_answer_then_garbage_streams_whole_then_400(make_server: ServerFactory) -> None:
    backend = GatedBackend()
    server = make_server(ServerConfig(rate_limit=None), backend=backend)
    body = fresh()
    async with connect(server.port) as connection:
        await connection.send(post_head(length=len(body)) + body + b"\x00\x01 not a request\r\n\r\n")
        answer = await connection.answer(on_piece=backend.arrived)
        refusal = await connection.answer()
        closed = await connection.answer()
    assert (answer.status, refusal.status, closed.status) == (200, 400, None), (answer, refusal, closed)
    assert backend.pieces[0] == b"first "  # it came before "second" was said: streamed
    assert answer.body == b"first second"  # the whole stream, its last chunk included
    assert refusal.headers["connection"] == "close"


async def test_a_valid_request_then_a_bad_host_is_answered_then_refused(server: BackgroundServer) -> None:
    answers, _ = await until_closed(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                                            b"GET /healthz HTTP/1.1\r\nHost: a b\r\n\r\n")
    assert [answer.status for answer in answers] == [200, 400], answers
    assert "Invalid Host header" in body_message(answers[1])


# -- HTTP/1.0 has no chunked framing (RFC 9112 section 7.1): close-delimited -------


class GatedBackend(Backend):
    """Says "first ", then waits until the test has read it (``arrived``), then says "second"."""

    name = "gated"

    def __init__(self) -> None:
        self.read_first = threading.Event()
        self.pieces: list[bytes] = []

    def arrived(self, piece: bytes) -> None:
        """A piece of the answer's body reached the client (``rawhttp``'s ``on_piece``)."""
        self.pieces.append(piece)
        if b"first " in b"".join(self.pieces):
            self.read_first.set()

    async def stream(self, conversation: Conversation) -> AsyncIterator[str]:
        yield "first "
        while not self.read_first.is_set():
            await asyncio.sleep(0.01)
        yield "second"


async def test_a_streamed_answer_to_http_1_0_is_close_delimited_and_streams(
    make_server: ServerFactory,
) -> None:
    backend = GatedBackend()
    server = make_server(ServerConfig(rate_limit=None), backend=backend)
    body = fresh()
    request = (f"POST /api/generate HTTP/1.0\r\nContent-Type: text/plain\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    async with connect(server.port) as connection:
        await connection.send(request)
        # Read to the close: the body has no other end. "second" waits for "first " to arrive.
        answer = await connection.answer(on_piece=backend.arrived)
    assert answer.status == 200
    assert backend.pieces[0] == b"first "  # arrived before the answer ended: not held back
    assert "transfer-encoding" not in answer.headers and "content-length" not in answer.headers
    assert answer.headers["connection"] == "close"
    assert answer.body == b"first second"  # as the words came: no chunk sizes


async def test_a_sized_answer_to_http_1_0_keeps_its_length_and_closes(server: BackgroundServer) -> None:
    answer, _ = await one_answer(server, b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert answer.status == 200 and answer.headers["connection"] == "close"
    assert int(answer.headers["content-length"]) == len(answer.body) and answer.json()["status"] == "ok"
    assert "transfer-encoding" not in answer.headers


async def test_http_1_1_still_gets_a_chunked_stream(server: BackgroundServer) -> None:
    body = fresh()
    answer, _ = await one_answer(server, post_head(extra=b"Connection: close\r\n", length=len(body)) + body)
    assert answer.status == 200 and answer.headers["transfer-encoding"] == "chunked"


# -- slow and idle clients -----------------------------------------------------


async def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(
    server: BackgroundServer,
) -> None:
    answers, took = await until_closed(server, b"")
    assert answers == []  # nothing was asked: nothing is answered
    assert 1.5 < took < 8


async def test_a_head_sent_one_byte_a_second_gets_408(server: BackgroundServer) -> None:
    # A byte every half second (never idle long), the head never done: the header timeout.
    answer, took = await one_answer(server, drip(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n", 0.5))
    assert answer.status == 408 and "headers not received" in body_message(answer)
    assert took < 8


async def test_a_body_that_stops_gets_408_after_the_idle_timeout(server: BackgroundServer) -> None:
    answer, took = await one_answer(server, post_head() + GOOD[:10])
    assert answer.status == 408 and "silent for 1.5 s" in body_message(answer)
    assert 1.0 < took < 8
    still_serves(server)


async def test_a_body_trickled_forever_is_cut_by_the_body_timeout(server: BackgroundServer) -> None:
    # One byte every 0.5 s: never idle 1.5 s, never done in 4 s.
    answer, took = await one_answer(server, [post_head(), *drip(GOOD, 0.5)])
    assert answer.status == 408 and "longer than 4 s" in body_message(answer)
    assert took < 12


async def test_500_slow_connections_are_all_closed(server: BackgroundServer) -> None:
    # The finding: 500 such connections were all still open after 75 s.
    half_heads = [exchange(server.port, b"GET /healthz HTTP/1.1\r\n", answers=2, timeout=20)
                  for _ in range(500)]  # a head that never ends; read until the close
    results = await asyncio.gather(*half_heads, return_exceptions=True)
    closed = [r for r in results if not isinstance(r, BaseException) and r[-1].closed_without_answer]
    failed = [r for r in results if isinstance(r, BaseException)]
    assert len(closed) == 500, f"{500 - len(closed)} of 500 not closed; failures: {failed[:3]}"
    still_serves(server)


async def test_a_second_request_on_a_kept_alive_connection_has_its_own_header_timeout(
    server: BackgroundServer,
) -> None:
    async with connect(server.port) as connection:
        await connection.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await connection.answer()).status == 200
        await asyncio.sleep(1)  # within the keep-alive timeout, then half a head, then silence
        await connection.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        second = await connection.answer()
        closed = await connection.answer()
    assert second.status == 408 and closed.closed_without_answer
    assert 1.5 < time.monotonic() - started < 8


async def test_an_idle_keep_alive_connection_is_closed(server: BackgroundServer) -> None:
    async with connect(server.port) as connection:
        await connection.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await connection.answer()).status == 200  # the whole /healthz answer
        started = time.monotonic()
        rest = await connection.answer()
        assert rest.closed_without_answer and 1.0 < time.monotonic() - started < 8


async def test_beyond_max_connections_idle_ones_are_closed_to_make_room(make_server: ServerFactory) -> None:
    server = make_server(ServerConfig(max_connections=2, keepalive_timeout=30, header_timeout=30))
    async with contextlib.AsyncExitStack() as stack:
        idle = [await stack.enter_async_context(connect(server.port, timeout=10)) for _ in range(2)]
        for connection in idle:
            await connection.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await connection.answer()).status == 200
        answer, _ = await one_answer(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert answer.status == 200
        # One idle connection was closed to make room for the new one.
        closed = 0
        for connection in idle:
            with contextlib.suppress(Hang):
                closed += (await connection.answer(timeout=2)).closed_without_answer
        assert closed >= 1


async def test_beyond_max_connections_with_none_idle_the_answer_is_503(make_server: ServerFactory) -> None:
    server = make_server(ServerConfig(max_connections=2, header_timeout=30))
    async with contextlib.AsyncExitStack() as stack:
        busy = [await stack.enter_async_context(connect(server.port, timeout=10)) for _ in range(2)]
        for connection in busy:
            await connection.send(b"GET /healthz HTTP/1.1\r\n")  # heads in progress: not idle
        await asyncio.sleep(0.3)
        answer, _ = await one_answer(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer.status == 503 and "too many open connections" in body_message(answer)
        assert answer.headers["retry-after"] == "1"
    still_serves(server)


# -- 413 for a client that writes its whole body before reading ----------------


@pytest.mark.parametrize("megabytes", [3, 20])
def test_urllib_posting_a_large_body_reads_the_413(make_server: ServerFactory, megabytes: int) -> None:
    # A limit of 1 MiB (the default before images): 3 MB is a little over it, 20 MB far over.
    server = make_server(ServerConfig(rate_limit=None, max_body_bytes=1 << 20, drain_timeout=5))
    request = urllib.request.Request(
        server.base_url + "/api/generate", data=b"x" * (megabytes * 1024 * 1024),
        headers={"Content-Type": "text/plain"},
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=30)
    with caught.value as answer:
        assert answer.code == 413
        assert "Request body too large" in json.loads(answer.read())["error"]["message"]
        assert answer.headers["Connection"] == "close"
    still_serves(server)


async def test_a_chunked_body_over_the_limit_gets_413_read_by_the_client(make_server: ServerFactory) -> None:
    server = make_server(ServerConfig(max_body_bytes=1000))
    chunk = b"a" * 65536
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(50)) + b"0\r\n\r\n"
    head = b"POST /api/generate HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    answer, _ = await one_answer(server, head + body)
    assert answer.status == 413


async def test_the_drain_is_bounded(make_server: ServerFactory) -> None:
    server = make_server(ServerConfig(max_body_bytes=1000, drain_bytes=100_000, drain_timeout=30))
    started = time.monotonic()
    sent = 0
    async with connect(server.port, timeout=10) as connection:
        await connection.send(post_head(length=50_000_000))
        try:
            while sent < 50_000_000:
                await connection.send(b"x" * 65536)
                sent += 65536
        except OSError:
            pass  # the server closed once it had dropped 100 kB: the write failed
    assert sent < 20_000_000
    assert time.monotonic() - started < 15
    still_serves(server)


# -- every refusal is an access-log line and a count in /metrics ----------------


def _refused_lines(caplog: pytest.LogCaptureFixture, count: int = 1) -> list[logging.LogRecord]:
    """The access-log lines of refused requests, once ``count`` have been logged."""
    for _ in range(500):
        lines = [r for r in caplog.records
                 if r.name == "gprochat.access" and getattr(r, "outcome", "") == "refused"]
        if len(lines) >= count:
            return lines
        time.sleep(0.01)
    raise AssertionError(f"fewer than {count} refused requests in the access log: {caplog.text}")


def _metric(server: BackgroundServer, name: str, **labels: str) -> float:
    with urllib.request.urlopen(server.base_url + "/metrics", timeout=15) as reply:
        text = reply.read().decode()
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}(?:\{{(.*)\}})? (\S+)", line)
        if match and labels.items() <= dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or "")).items():
            return float(match.group(2))
    return 0.0


def _assert_logged_and_counted(
    server: BackgroundServer, caplog: pytest.LogCaptureFixture, status: int, reason: str,
    method: str = "GET", route: str = "other",
) -> None:
    [line] = _refused_lines(caplog)
    assert (line.status, line.reason, line.route, line.method) == (  # type: ignore[attr-defined]
        status, reason, route, method)
    assert line.error and line.client == "127.0.0.1"  # type: ignore[attr-defined]
    assert line.getMessage() == f"{method} {route} {status}"
    assert _metric(server, "gprochat_http_refusals_total", status=str(status), reason=reason) == 1
    assert _metric(server, "gprochat_http_requests_total", method=method, route=route,
                   status=str(status)) == 1


_TOO_MANY_HEADERS = b"".join(b"X-H%d: v\r\n" % i for i in range(150))

REFUSALS = [
    pytest.param(b"GET /healthz HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n", 400, "malformed",
                 id="malformed"),
    pytest.param(b"GET /healthz HTTP/1.1\r\n\r\n", 400, "bad_host", id="no-host"),
    pytest.param(b"GET /healthz\r\n\r\n", 400, "no_http_version", id="http-0.9"),
    pytest.param(b"GET /healthz?" + b"u" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414,
                 "url_too_long", id="long-url"),
    pytest.param(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + _TOO_MANY_HEADERS + b"\r\n", 431,
                 "too_many_headers", id="many-headers"),
    pytest.param(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 20000 + b"\r\n\r\n", 431,
                 "head_too_large", id="large-head"),
    pytest.param(b"GET /healthz HTTP/1.1\r\nHost: x\r\n", 408, "head_timeout", id="slow-head"),
]


@pytest.mark.parametrize(("data", "status", "reason"), REFUSALS)
async def test_a_refusal_before_routing_is_logged_and_counted(
    server: BackgroundServer, caplog: pytest.LogCaptureFixture, data: bytes, status: int, reason: str,
) -> None:
    caplog.set_level(logging.INFO, logger="gprochat.access")
    answer, _ = await one_answer(server, data)
    assert answer.status == status
    _assert_logged_and_counted(server, caplog, status, reason)


async def test_a_body_too_slow_is_one_line_for_its_route(
    server: BackgroundServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gprochat.access")
    answer, _ = await one_answer(server, post_head() + GOOD[:10])
    assert answer.status == 408
    _assert_logged_and_counted(server, caplog, 408, "body_timeout", "POST", "/api/generate")
    # The app's own line for that request is that one: not a second with another status.
    time.sleep(0.2)
    generate_lines = [r for r in caplog.records
                      if r.name == "gprochat.access" and getattr(r, "route", "") == "/api/generate"]
    assert len(generate_lines) == 1


async def test_a_503_for_too_many_connections_is_logged_and_counted(
    make_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gprochat.access")
    server = make_server(ServerConfig(max_connections=2, header_timeout=30))
    async with contextlib.AsyncExitStack() as stack:
        busy = [await stack.enter_async_context(connect(server.port, timeout=10)) for _ in range(2)]
        for connection in busy:
            await connection.send(b"GET /healthz HTTP/1.1\r\n")  # heads in progress: not idle
        await asyncio.sleep(0.3)
        answer, _ = await one_answer(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer.status == 503
        [line] = _refused_lines(caplog)
        assert (line.status, line.reason) == (503, "too_many_connections")  # type: ignore[attr-defined]
    assert _metric(server, "gprochat_http_refusals_total", status="503",
                   reason="too_many_connections") == 1
