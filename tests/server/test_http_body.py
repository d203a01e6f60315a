"""Request bodies through the HTTP layer (server/http.py), over raw sockets.

A body with a Content-Length is handed to the app whole, in one message, however many
packets it came in; a chunked one still comes piece by piece. Either way every byte
arrives, the body limit refuses at its exact byte, and 100-continue, pipelining and a
client leaving mid-body behave as before.
"""

from __future__ import annotations

import hashlib
import json
import select
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from gprochat.server import BackgroundServer, ServerConfig
from gprochat.server.http import HOLD_BYTES

from ..conftest import ServerFactory
from .helpers import image_part, png, signed

# -- a small ASGI app that says which messages its body came in -----------------


class RecordingApp:
    """Answers each POST with the ``http.request`` messages it read: sizes, more_body, SHA-256.

    A ``http.disconnect`` while reading is recorded in ``disconnects`` (and set off
    ``disconnected``) instead of answered.
    """

    def __init__(self) -> None:
        self.disconnects = 0
        self.disconnected = threading.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        messages: list[list[Any]] = []
        digest = hashlib.sha256()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.disconnects += 1
                self.disconnected.set()
                return
            messages.append([len(message["body"]), message.get("more_body", False)])
            digest.update(message["body"])
            more = message.get("more_body", False)
        answer = json.dumps({"messages": messages, "sha256": digest.hexdigest()}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"application/json"), (b"content-length", b"%d" % len(answer))]})
        await send({"type": "http.response.body", "body": answer})


async def _lifespan(receive: Any, send: Any) -> None:
    """An ASGI lifespan with nothing to start or stop."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


@pytest.fixture
def recorder() -> Iterator[tuple[RecordingApp, BackgroundServer]]:
    app = RecordingApp()
    with BackgroundServer(ServerConfig(body_idle_timeout=5), app=app) as server:
        yield app, server


# -- raw socket helpers -----------------------------------------------------------


def _connect(server: BackgroundServer) -> socket.socket:
    sock = socket.create_connection((server.host, server.port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _send_in_pieces(sock: socket.socket, data: bytes, size: int, pause_every: int = 0) -> None:
    """``data`` in ``size``-byte writes; a short pause every ``pause_every`` writes, so
    that the server reads it as many packets rather than one."""
    for number, start in enumerate(range(0, len(data), size), start=1):
        sock.sendall(data[start:start + size])
        if pause_every and number % pause_every == 0:
            time.sleep(0.001)


def _read_answers(sock: socket.socket, count: int) -> list[tuple[int, bytes]]:
    """``count`` answers with a Content-Length or chunked framing: (status, body) each."""
    buffer = b""
    answers: list[tuple[int, bytes]] = []

    def fill() -> None:
        nonlocal buffer
        chunk = sock.recv(1 << 16)
        assert chunk, f"the server closed after {len(answers)} answers: {buffer[:300]!r}"
        buffer += chunk

    while len(answers) < count:
        while b"\r\n\r\n" not in buffer:
            fill()
        head, buffer = buffer.split(b"\r\n\r\n", 1)
        status = int(head.split(b" ", 2)[1])
        if status == 100:
            continue
        headers = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:])
        headers = {name.lower(): value for name, value in headers.items()}
        if b"content-length" in headers:
            length = int(headers[b"content-length"])
            while len(buffer) < length:
                fill()
            answers.append((status, buffer[:length]))
            buffer = buffer[length:]
            continue
        body = b""
        while True:  # chunked
            while b"\r\n" not in buffer:
                fill()
            size_line, buffer = buffer.split(b"\r\n", 1)
            size = int(size_line, 16)
            while len(buffer) < size + 2:
                fill()
            body, buffer = body + buffer[:size], buffer[size + 2:]
            if size == 0:
                break
        answers.append((status, body))
    return answers


def _chunked(body: bytes, sizes: list[int]) -> bytes:
    """``body`` in chunked framing, chunks of ``sizes`` in turn (the last one repeated)."""
    out, start, index = [], 0, 0
    while start < len(body):
        size = sizes[min(index, len(sizes) - 1)]
        piece = body[start:start + size]
        out.append(b"%x\r\n%s\r\n" % (len(piece), piece))
        start, index = start + size, index + 1
    return b"".join(out) + b"0\r\n\r\n"


def _head(length: int | None, path: str = "/api/generate", extra: bytes = b"") -> bytes:
    framing = b"Transfer-Encoding: chunked" if length is None else b"Content-Length: %d" % length
    return (b"POST " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: text/plain\r\n" + framing + b"\r\n" + extra + b"\r\n")


# -- the app's view: one message for a Content-Length body ------------------------


def test_a_content_length_body_in_many_packets_reaches_the_app_in_one_message(
    recorder: tuple[RecordingApp, BackgroundServer],
) -> None:
    _, server = recorder
    body = png(3 << 20, seed=1)
    with _connect(server) as sock:
        sock.sendall(_head(len(body), "/upload"))
        _send_in_pieces(sock, body, 4096, pause_every=64)
        [(status, answer)] = _read_answers(sock, 1)
    assert status == 200
    seen = json.loads(answer)
    assert seen["sha256"] == hashlib.sha256(body).hexdigest()
    assert seen["messages"] == [[len(body), False]]  # uvicorn alone: one per 64 KiB or so


def test_a_chunked_body_split_inside_its_framing_arrives_intact(
    recorder: tuple[RecordingApp, BackgroundServer],
) -> None:
    _, server = recorder
    body = png(1 << 20, seed=2)
    framed = _chunked(body, [1, 7, 4096, 65536, 100_000, 3])
    with _connect(server) as sock:
        sock.sendall(_head(None, "/upload"))
        _send_in_pieces(sock, framed, 1000, pause_every=16)  # cuts size lines and CRLFs
        [(status, answer)] = _read_answers(sock, 1)
    assert status == 200
    seen = json.loads(answer)
    assert seen["sha256"] == hashlib.sha256(body).hexdigest()
    assert sum(size for size, _ in seen["messages"]) == len(body)
    assert seen["messages"][-1][1] is False


def test_a_client_leaving_mid_body_is_a_disconnect_for_the_app(
    recorder: tuple[RecordingApp, BackgroundServer],
) -> None:
    app, server = recorder
    body = png(1 << 20, seed=3)
    with _connect(server) as sock:
        sock.sendall(_head(len(body), "/upload") + body[: len(body) // 2])
        time.sleep(0.05)  # the app is reading (waiting for the rest)
    assert app.disconnected.wait(15)
    assert app.disconnects == 1
    with _connect(server) as sock:  # and the server goes on serving
        sock.sendall(_head(5, "/upload") + b"hello")
        [(status, answer)] = _read_answers(sock, 1)
    assert status == 200 and json.loads(answer)["messages"] == [[5, False]]


def test_100_continue_then_the_body_in_pieces(recorder: tuple[RecordingApp, BackgroundServer]) -> None:
    _, server = recorder
    body = png(600_000, seed=4)
    with _connect(server) as sock:
        sock.sendall(_head(len(body), "/upload", b"Expect: 100-continue\r\n"))
        interim = b""
        while b"\r\n\r\n" not in interim:
            chunk = sock.recv(1024)
            assert chunk, "closed before 100 Continue"
            interim += chunk
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        _send_in_pieces(sock, body, 8192, pause_every=8)
        [(status, answer)] = _read_answers(sock, 1)
    assert status == 200
    assert json.loads(answer) == {"messages": [[len(body), False]],
                                  "sha256": hashlib.sha256(body).hexdigest()}


def test_pipelined_bodies_each_reach_their_request(recorder: tuple[RecordingApp, BackgroundServer]) -> None:
    _, server = recorder
    bodies = [png(300_000, seed=5), b"", png(70_000, seed=6), b"x"]
    stream = b"".join(_head(len(body), "/upload") + body for body in bodies)
    with _connect(server) as sock:
        _send_in_pieces(sock, stream, 5000, pause_every=10)  # heads land mid-packet
        answers = _read_answers(sock, len(bodies))
    for body, (status, answer) in zip(bodies, answers, strict=True):
        assert status == 200
        assert json.loads(answer)["sha256"] == hashlib.sha256(body).hexdigest()


def test_a_large_body_then_bytes_that_are_no_request_answers_then_400(
    recorder: tuple[RecordingApp, BackgroundServer],
) -> None:
    _, server = recorder
    body = png(500_000, seed=9)
    with _connect(server) as sock:
        _send_in_pieces(sock, _head(len(body), "/upload") + body + b"\x00\x01 no request\r\n\r\n",
                        7000, pause_every=8)
        first, second = _read_answers(sock, 2)
        assert sock.recv(1024) == b""  # then closed
    assert first[0] == 200 and json.loads(first[1])["sha256"] == hashlib.sha256(body).hexdigest()
    assert second[0] == 400 and b"Invalid HTTP request" in second[1]


def test_an_http_1_0_body_in_pieces_is_read_whole_then_closed(
    recorder: tuple[RecordingApp, BackgroundServer],
) -> None:
    _, server = recorder
    body = png(400_000, seed=10)
    head = b"POST /upload HTTP/1.0\r\nContent-Length: %d\r\n\r\n" % len(body)
    with _connect(server) as sock:
        sock.sendall(head)
        _send_in_pieces(sock, body, 4096, pause_every=16)
        [(status, answer)] = _read_answers(sock, 1)
        assert sock.recv(1024) == b""
    assert status == 200
    assert json.loads(answer) == {"messages": [[len(body), False]],
                                  "sha256": hashlib.sha256(body).hexdigest()}


# -- through the real route: the echo backend's SHA-256 of the image --------------


def _image_request(raw: bytes) -> bytes:
    return json.dumps(signed("What is this?", images=[image_part(raw)])).encode()


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_an_image_sent_in_many_packets_arrives_intact(make_server: ServerFactory, framing: str) -> None:
    server = make_server(ServerConfig(rate_limit=None))
    raw = png(2 << 20, seed=7)
    body = _image_request(raw)
    with _connect(server) as sock:
        if framing == "chunked":
            sock.sendall(_head(None))
            _send_in_pieces(sock, _chunked(body, [65536, 1, 4093]), 3000, pause_every=32)
        else:
            sock.sendall(_head(len(body)))
            _send_in_pieces(sock, body, 3000, pause_every=32)
        [(status, answer)] = _read_answers(sock, 1)
    assert status == 200, answer
    assert f"sha256 {hashlib.sha256(raw).hexdigest()}]" in answer.decode()
    assert f"{len(raw)} bytes" in answer.decode()


# -- the body limit: at the exact byte, both framings --------------------------------


def _padded(size: int) -> bytes:
    """A signed request body of exactly ``size`` bytes (JSON allows trailing spaces)."""
    body = json.dumps(signed("padded")).encode()
    assert len(body) <= size
    return body + b" " * (size - len(body))


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_the_body_limit_refuses_at_its_exact_byte(make_server: ServerFactory, framing: str) -> None:
    limit = 300_000
    server = make_server(ServerConfig(rate_limit=None, max_body_bytes=limit))
    for size, expected in ((limit, 200), (limit + 1, 413)):
        body = _padded(size)
        with _connect(server) as sock:
            if framing == "chunked":
                sock.sendall(_head(None))
                _send_in_pieces(sock, _chunked(body, [40_000]), 10_000, pause_every=4)
            else:
                sock.sendall(_head(size))
                _send_in_pieces(sock, body, 10_000, pause_every=4)
            [(status, answer)] = _read_answers(sock, 1)
        assert status == expected, (size, answer[:300])
        if expected == 413:
            assert "Request body too large" in json.loads(answer)["error"]["message"]
        else:
            assert b"padded" in answer



# -- an answer that comes before the body (a refusal) -----------------------------


class EarlyApp:
    """Answers 429 at once, reading no body; ``answered`` is set once it has sent all."""

    BODY = b'{"error": {"message": "Too many requests"}}'

    def __init__(self) -> None:
        self.answered = threading.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        await send({"type": "http.response.start", "status": 429, "headers": [
            (b"content-type", b"application/json"), (b"content-length", b"%d" % len(self.BODY))]})
        await send({"type": "http.response.body", "body": self.BODY})
        self.answered.set()


@pytest.fixture
def early() -> Iterator[tuple[EarlyApp, BackgroundServer]]:
    app = EarlyApp()
    with BackgroundServer(ServerConfig(body_idle_timeout=2), app=app) as server:
        yield app, server


def _arrives_within(sock: socket.socket, seconds: float) -> bool:
    readable, _, _ = select.select([sock], [], [], seconds)
    return bool(readable)


def _read_to_close(sock: socket.socket) -> bytes:
    """Everything until the server's FIN (a reset fails the test: the answer is lost)."""
    data = b""
    while chunk := sock.recv(1 << 16):
        data += chunk
    return data


def test_an_early_answer_waits_for_the_rest_of_a_small_body(
    early: tuple[EarlyApp, BackgroundServer],
) -> None:
    # A proxy writing the body from its own client while the answer arrives can lose the
    # answer (Go's HTTP/1 server: Caddy); once the body is in, nothing races.
    app, server = early
    body = json.dumps(signed("Hi")).encode()
    with _connect(server) as sock:
        sock.sendall(_head(len(body)) + body[:10])
        assert app.answered.wait(30)
        assert not _arrives_within(sock, 0.5), "the answer was sent before the body was in"
        sock.sendall(body[10:])
        answer = _read_to_close(sock)
    head, _, rest = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 429 ")
    assert b"connection: close" in head.lower()
    assert rest == EarlyApp.BODY


def test_a_held_answer_is_sent_when_the_body_stops_coming(
    early: tuple[EarlyApp, BackgroundServer],
) -> None:
    app, server = early
    with _connect(server) as sock:
        sock.sendall(_head(1000) + b"{")
        assert app.answered.wait(30)
        # The body falls silent: after body_idle_timeout (2 s) the answer goes, not a 408.
        answer = _read_to_close(sock)
    assert answer.startswith(b"HTTP/1.1 429 ")
    assert answer.endswith(EarlyApp.BODY)


def test_an_early_answer_to_a_large_remainder_is_sent_at_once(
    early: tuple[EarlyApp, BackgroundServer],
) -> None:
    app, server = early
    with _connect(server) as sock:
        sock.sendall(_head(HOLD_BYTES + 1) + b"{")
        assert app.answered.wait(30)
        # Nothing more is sent: the answer comes anyway, then the lingering close.
        assert _arrives_within(sock, 30)
        head = sock.recv(1 << 16)
        assert head.startswith(b"HTTP/1.1 429 ")
        sock.sendall(bytes(HOLD_BYTES))  # read and dropped while the server lingers
        sock.shutdown(socket.SHUT_WR)
        _read_to_close(sock)


def test_an_early_answer_to_a_client_awaiting_100_continue_is_sent_at_once() -> None:
    # It sends no body until told to: the final answer goes instead of "100 Continue"
    # (held for the body, it would wait for the body's timeouts, here far away).
    app = EarlyApp()
    with BackgroundServer(ServerConfig(body_idle_timeout=300, body_timeout=600), app=app) as server, \
            _connect(server) as sock:
        sock.sendall(_head(1000, extra=b"Expect: 100-continue\r\n"))
        assert app.answered.wait(30)
        assert _arrives_within(sock, 30)
        assert sock.recv(1 << 16).startswith(b"HTTP/1.1 429 ")
