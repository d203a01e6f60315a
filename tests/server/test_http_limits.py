"""The HTTP layer (server/http.py) over raw sockets: framing, limits, timeouts, the 413 drain.

Each probe talks bytes to our real server on 127.0.0.1 and reads until the server
closes; then the server must still answer a good request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator

import pytest

from gprochat.server import BackgroundServer, ServerConfig
from gprochat.server.backends import Backend, Conversation

from ..conftest import ServerFactory
from .helpers import signed

GOOD = json.dumps(signed("Hi")).encode()  # for requests refused before the signature is checked


def fresh() -> bytes:
    """A body signed now: one meant to be answered must be inside the server's time
    window (GOOD was signed at import, minutes earlier in a full run) and never replayed."""
    return json.dumps(signed("Hi")).encode()


def exchange(server: BackgroundServer, data: bytes, *, wait: float = 15.0) -> tuple[bytes, float]:
    """Send ``data``, read until the server closes; (everything read, seconds it took)."""
    started = time.monotonic()
    with socket.create_connection((server.host, server.port), timeout=wait) as sock:
        if data:
            sock.sendall(data)
        received = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
    return received, time.monotonic() - started


def status_of(raw: bytes) -> int:
    assert raw.startswith(b"HTTP/1.1 "), raw[:200]
    return int(raw.split(b" ", 2)[1])


def body_message(raw: bytes) -> str:
    return str(json.loads(raw.split(b"\r\n\r\n", 1)[1])["error"]["message"])


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


def test_content_length_with_transfer_encoding_is_refused_and_closed(server: BackgroundServer) -> None:
    smuggle = b"0\r\n\r\nPOST /api/generate HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
    head = post_head(extra=b"Transfer-Encoding: chunked\r\n", length=len(smuggle))
    raw, _ = exchange(server, head + smuggle)
    assert status_of(raw) == 400
    assert "Transfer-Encoding" in body_message(raw)
    assert raw.count(b"HTTP/1.1 ") == 1  # the smuggled request was never served
    still_serves(server)


def test_a_chunk_size_of_2_to_the_80_fails_at_once(server: BackgroundServer) -> None:
    head = b"POST /api/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    raw, took = exchange(server, head + b"%x\r\n" % 2**80)
    assert status_of(raw) == 400 and "Chunk size" in body_message(raw)
    assert took < 1.4  # before any timeout (the shortest, body idle, is 1.5 s)
    still_serves(server)


@pytest.mark.parametrize("coding", [b"gzip", b"chunked, gzip", b"identity"])
def test_a_transfer_encoding_not_ending_in_chunked_is_refused(
    server: BackgroundServer, coding: bytes
) -> None:
    head = b"POST /api/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: " + coding + b"\r\n\r\n"
    raw, _ = exchange(server, head + b"abc")
    assert status_of(raw) == 400


def test_two_different_content_lengths_are_refused(server: BackgroundServer) -> None:
    raw, _ = exchange(server, post_head(extra=b"Content-Length: 3\r\n") + GOOD)
    assert status_of(raw) == 400


def test_an_upgrade_without_a_body_is_served_as_http_1_1(server: BackgroundServer) -> None:
    raw, _ = exchange(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                      b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
    assert status_of(raw) == 200


def test_an_upgrade_with_a_body_is_refused_not_served_without_its_body(server: BackgroundServer) -> None:
    head = post_head(extra=b"Connection: upgrade\r\nUpgrade: websocket\r\n")
    raw, took = exchange(server, head + GOOD)
    assert status_of(raw) == 400 and "Upgrade is not supported" in body_message(raw)
    assert took < 1.4


# -- sizes: 414, 431 -----------------------------------------------------------


def test_a_100_kb_url_gets_414(server: BackgroundServer) -> None:
    raw, _ = exchange(server, b"GET /healthz?" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_of(raw) == 414 and "URL too long" in body_message(raw)
    still_serves(server)


def test_a_url_at_the_limit_is_served(make_server: ServerFactory) -> None:
    server = make_server(ServerConfig(max_url_bytes=200))
    path = b"/healthz?" + b"a" * (200 - len(b"/healthz?"))
    raw, _ = exchange(server, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status_of(raw) == 200
    raw, _ = exchange(server, b"GET " + path + b"a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status_of(raw) == 414


def test_1000_headers_get_431(server: BackgroundServer) -> None:
    headers = b"".join(b"X-H%d: v\r\n" % i for i in range(1000))
    raw, _ = exchange(server, post_head(extra=headers) + GOOD)
    assert status_of(raw) == 431 and "Too many request headers" in body_message(raw)
    still_serves(server)


def test_the_header_count_limit_is_exact(make_server: ServerFactory) -> None:
    server = make_server(ServerConfig(max_header_count=5))
    # Host, Connection and three more: 5 served; one more: 431.
    three = b"A: 1\r\nB: 2\r\nC: 3\r\n"
    raw, _ = exchange(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + three + b"\r\n")
    assert status_of(raw) == 200
    raw, _ = exchange(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + three
                      + b"D: 4\r\n\r\n")
    assert status_of(raw) == 431


@pytest.mark.parametrize("size", [20_000, 100_000, 2_000_000])
def test_a_huge_header_gets_431(server: BackgroundServer, size: int) -> None:
    raw, _ = exchange(server, post_head(extra=b"X-Big: " + b"a" * size + b"\r\n") + GOOD)
    assert status_of(raw) == 431 and "Request headers too large" in body_message(raw)
    still_serves(server)


# -- Host ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "hosts",
    [b"", b"Host: a b\r\n", b"Host: <script>\r\n", b"Host: x\r\nHost: y\r\n", b"Host: ex/ample\r\n",
     b"Host: example.com:80:80\r\n", b"Host: [::1\r\n"],
    ids=["missing", "space", "markup", "two", "slash", "two-ports", "open-bracket"],
)
def test_an_invalid_host_gets_400(server: BackgroundServer, hosts: bytes) -> None:
    raw, _ = exchange(server, b"GET /healthz HTTP/1.1\r\n" + hosts + b"\r\n")
    assert status_of(raw) == 400 and "Host" in body_message(raw)


@pytest.mark.parametrize("host", [b"example.com", b"127.0.0.1:8000", b"[::1]:8000", b"xn--bcher-kva.de"])
def test_valid_hosts_are_served(server: BackgroundServer, host: bytes) -> None:
    raw, _ = exchange(server, b"GET /healthz HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n")
    assert status_of(raw) == 200


def test_http_1_0_without_host_is_served(server: BackgroundServer) -> None:
    raw, _ = exchange(server, b"GET /healthz HTTP/1.0\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 200")


def test_a_request_line_without_a_version_is_refused(server: BackgroundServer) -> None:
    raw, _ = exchange(server, b"GET /healthz\r\n\r\n")  # HTTP/0.9's form; was served 200
    assert status_of(raw) == 400 and "no HTTP version" in body_message(raw)
    assert b"connection: close" in raw.lower()
    still_serves(server)


def _statuses(raw: bytes) -> list[int]:
    return [int(status) for status in re.findall(rb"HTTP/1\.1 (\d{3}) ", raw)]


@pytest.mark.parametrize("garbage", [b"HELLO THERE\r\n\r\n", b"GET /x HTTP/1.1\r\nNoColon\r\n\r\n",
                                     bytes(range(256))])
def test_a_valid_request_then_garbage_in_one_packet_is_answered_then_refused(
    server: BackgroundServer, caplog: pytest.LogCaptureFixture, garbage: bytes,
) -> None:
    caplog.set_level(logging.INFO, logger="gprochat.access")
    raw, _ = exchange(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" + garbage)
    assert _statuses(raw) == [200, 400], raw
    assert b'"status":"ok"' in raw and "Invalid HTTP request" in raw.rsplit(b"\r\n\r\n", 1)[1].decode()
    [refused] = _refused_lines(caplog)
    assert (refused.status, refused.reason) == (400, "malformed")  # type: ignore[attr-defined]


def test_a_streamed_answer_then_garbage_streams_whole_then_400(make_server: ServerFactory) -> None:
    backend = GatedBackend()
    server = make_server(ServerConfig(rate_limit=None), backend=backend)
    with socket.create_connection((server.host, server.port), timeout=15) as sock:
        body = fresh()
        sock.sendall(post_head(length=len(body)) + body + b"\x00\x01 not a request\r\n\r\n")
        raw = b""
        while b"first " not in raw:
            chunk = sock.recv(65536)
            assert chunk, f"closed before the first words: {raw!r}"
            raw += chunk
        backend.read_first.set()
        while chunk := sock.recv(65536):
            raw += chunk
    assert _statuses(raw) == [200, 400], raw
    answer, refusal = raw.split(b"HTTP/1.1 400", 1)
    assert answer.endswith(b"second\r\n0\r\n\r\n")  # the whole stream, its last chunk included
    assert b"connection: close" in refusal.lower()


def test_a_valid_request_then_a_bad_host_is_answered_then_refused(server: BackgroundServer) -> None:
    raw, _ = exchange(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                              b"GET /healthz HTTP/1.1\r\nHost: a b\r\n\r\n")
    assert _statuses(raw) == [200, 400], raw
    assert "Invalid Host header" in body_message(raw.split(b"HTTP/1.1 400", 1)[1])


# -- HTTP/1.0 has no chunked framing (RFC 9112 section 7.1): close-delimited -------


def _head_and_body(raw: bytes) -> tuple[dict[bytes, bytes], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")[1:]
    return {n.strip().lower(): v.strip() for n, _, v in (line.partition(b":") for line in lines)}, body


class GatedBackend(Backend):
    """Says "first ", then waits for the test to have read it, then says "second"."""

    name = "gated"

    def __init__(self) -> None:
        self.read_first = threading.Event()

    async def stream(self, conversation: Conversation) -> AsyncIterator[str]:
        yield "first "
        while not self.read_first.is_set():
            await asyncio.sleep(0.01)
        yield "second"


def test_a_streamed_answer_to_http_1_0_is_close_delimited_and_streams(make_server: ServerFactory) -> None:
    backend = GatedBackend()
    server = make_server(ServerConfig(rate_limit=None), backend=backend)
    body = fresh()
    request = (f"POST /api/generate HTTP/1.0\r\nContent-Type: text/plain\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    with socket.create_connection((server.host, server.port), timeout=15) as sock:
        sock.sendall(request)
        raw = b""
        while b"first " not in raw:  # arrives before the answer ends: not held back
            chunk = sock.recv(65536)
            assert chunk, f"closed before the first words: {raw!r}"
            raw += chunk
        backend.read_first.set()
        while chunk := sock.recv(65536):
            raw += chunk
    assert status_of(raw) == 200
    headers, body = _head_and_body(raw)
    assert b"transfer-encoding" not in headers and b"content-length" not in headers
    assert headers[b"connection"] == b"close"
    assert body == b"first second"  # as the words came: no chunk sizes


def test_a_sized_answer_to_http_1_0_keeps_its_length_and_closes(server: BackgroundServer) -> None:
    raw, _ = exchange(server, b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    headers, body = _head_and_body(raw)
    assert status_of(raw) == 200 and headers[b"connection"] == b"close"
    assert int(headers[b"content-length"]) == len(body) and json.loads(body)["status"] == "ok"
    assert b"transfer-encoding" not in headers


def test_http_1_1_still_gets_a_chunked_stream(server: BackgroundServer) -> None:
    body = fresh()
    raw, _ = exchange(server, post_head(extra=b"Connection: close\r\n", length=len(body)) + body)
    headers, _ = _head_and_body(raw)
    assert status_of(raw) == 200 and headers[b"transfer-encoding"] == b"chunked"


# -- slow and idle clients -----------------------------------------------------


def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(server: BackgroundServer) -> None:
    raw, took = exchange(server, b"")
    assert raw == b""  # nothing was asked: nothing is answered
    assert 1.5 < took < 8


def test_a_head_sent_one_byte_a_second_gets_408(server: BackgroundServer) -> None:
    started = time.monotonic()
    with socket.create_connection((server.host, server.port), timeout=15) as sock:
        received = b""
        for byte in b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n":
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            sock.settimeout(0.5)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            received += chunk
            break
        sock.settimeout(10)
        while chunk := sock.recv(65536):
            received += chunk
    assert status_of(received) == 408 and "headers not received" in body_message(received)
    assert time.monotonic() - started < 8


def test_a_body_that_stops_gets_408_after_the_idle_timeout(server: BackgroundServer) -> None:
    raw, took = exchange(server, post_head() + GOOD[:10])
    assert status_of(raw) == 408 and "silent for 1.5 s" in body_message(raw)
    assert 1.0 < took < 8
    still_serves(server)


def test_a_body_trickled_forever_is_cut_by_the_body_timeout(server: BackgroundServer) -> None:
    started = time.monotonic()
    received = b""
    with socket.create_connection((server.host, server.port), timeout=15) as sock:
        sock.sendall(post_head())
        sock.settimeout(0.5)
        for byte in GOOD:  # one byte every 0.5 s: never idle 1.5 s, never done in 4 s
            try:
                sock.sendall(bytes([byte]))
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            received += chunk
            break
        sock.settimeout(10)
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
    assert status_of(received) == 408 and "longer than 4 s" in body_message(received)
    assert time.monotonic() - started < 12


def test_500_slow_connections_are_all_closed(server: BackgroundServer) -> None:
    # The finding: 500 such connections were all still open after 75 s.
    sockets = [socket.create_connection((server.host, server.port)) for _ in range(500)]
    try:
        for sock in sockets:
            sock.sendall(b"GET /healthz HTTP/1.1\r\n")  # a head that never ends
        deadline = time.monotonic() + 20
        closed = 0
        for sock in sockets:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            data = b""
            try:
                while chunk := sock.recv(65536):
                    data += chunk
            except TimeoutError:
                continue
            closed += 1
        assert closed == len(sockets)
    finally:
        for sock in sockets:
            sock.close()
    still_serves(server)


def test_a_second_request_on_a_kept_alive_connection_has_its_own_header_timeout(
    server: BackgroundServer,
) -> None:
    with socket.create_connection((server.host, server.port), timeout=15) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        first = b""
        while not first.endswith(b"}"):
            first += sock.recv(65536)
        time.sleep(1)  # within the keep-alive timeout, then half a head, then silence
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        rest = b""
        while chunk := sock.recv(65536):
            rest += chunk
    assert status_of(rest) == 408
    assert 1.5 < time.monotonic() - started < 8


def test_an_idle_keep_alive_connection_is_closed(server: BackgroundServer) -> None:
    with socket.create_connection((server.host, server.port), timeout=15) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        first = b""
        while not first.endswith(b"}"):  # the whole /healthz answer
            first += sock.recv(65536)
        assert status_of(first) == 200
        started = time.monotonic()
        rest = b""
        while chunk := sock.recv(65536):
            rest += chunk
        assert rest == b"" and 1.0 < time.monotonic() - started < 8


def test_beyond_max_connections_idle_ones_are_closed_to_make_room(make_server: ServerFactory) -> None:
    server = make_server(ServerConfig(max_connections=2, keepalive_timeout=30, header_timeout=30))
    idle = []
    for _ in range(2):
        sock = socket.create_connection((server.host, server.port), timeout=10)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while not answer.endswith(b"}"):
            answer += sock.recv(65536)
        assert status_of(answer) == 200
        idle.append(sock)
    try:
        raw, _ = exchange(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert status_of(raw) == 200
        # One idle connection was closed to make room for the new one.
        closed = 0
        for sock in idle:
            sock.settimeout(2)
            with contextlib.suppress(TimeoutError):
                closed += sock.recv(1) == b""
        assert closed >= 1
    finally:
        for sock in idle:
            sock.close()


def test_beyond_max_connections_with_none_idle_the_answer_is_503(make_server: ServerFactory) -> None:
    server = make_server(ServerConfig(max_connections=2, header_timeout=30))
    busy = [socket.create_connection((server.host, server.port), timeout=10) for _ in range(2)]
    try:
        for sock in busy:
            sock.sendall(b"GET /healthz HTTP/1.1\r\n")  # heads in progress: not idle
        time.sleep(0.3)
        raw, _ = exchange(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status_of(raw) == 503 and "too many open connections" in body_message(raw)
        assert b"retry-after: 1" in raw.lower()
    finally:
        for sock in busy:
            sock.close()
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


def test_a_chunked_body_over_the_limit_gets_413_read_by_the_client(make_server: ServerFactory) -> None:
    server = make_server(ServerConfig(max_body_bytes=1000))
    chunk = b"a" * 65536
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(50)) + b"0\r\n\r\n"
    head = b"POST /api/generate HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    raw, _ = exchange(server, head + body)
    assert status_of(raw) == 413


def test_the_drain_is_bounded(make_server: ServerFactory) -> None:
    server = make_server(ServerConfig(max_body_bytes=1000, drain_bytes=100_000, drain_timeout=30))
    started = time.monotonic()
    sent = 0
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(post_head(length=50_000_000))
        try:
            while sent < 50_000_000:
                sock.sendall(b"x" * 65536)
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
def test_a_refusal_before_routing_is_logged_and_counted(
    server: BackgroundServer, caplog: pytest.LogCaptureFixture, data: bytes, status: int, reason: str,
) -> None:
    caplog.set_level(logging.INFO, logger="gprochat.access")
    raw, _ = exchange(server, data)
    assert status_of(raw) == status
    _assert_logged_and_counted(server, caplog, status, reason)


def test_a_body_too_slow_is_one_line_for_its_route(
    server: BackgroundServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gprochat.access")
    raw, _ = exchange(server, post_head() + GOOD[:10])
    assert status_of(raw) == 408
    _assert_logged_and_counted(server, caplog, 408, "body_timeout", "POST", "/api/generate")
    # The app's own line for that request is that one: not a second with another status.
    time.sleep(0.2)
    generate_lines = [r for r in caplog.records
                      if r.name == "gprochat.access" and getattr(r, "route", "") == "/api/generate"]
    assert len(generate_lines) == 1


def test_a_503_for_too_many_connections_is_logged_and_counted(
    make_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gprochat.access")
    server = make_server(ServerConfig(max_connections=2, header_timeout=30))
    busy = [socket.create_connection((server.host, server.port), timeout=10) for _ in range(2)]
    try:
        for sock in busy:
            sock.sendall(b"GET /healthz HTTP/1.1\r\n")  # heads in progress: not idle
        time.sleep(0.3)
        raw, _ = exchange(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status_of(raw) == 503
        [line] = _refused_lines(caplog)
        assert (line.status, line.reason) == (503, "too_many_connections")  # type: ignore[attr-defined]
    finally:
        for sock in busy:
            sock.close()
    assert _metric(server, "gprochat_http_refusals_total", status="503",
                   reason="too_many_connections") == 1
