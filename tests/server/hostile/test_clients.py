"""Slow and idle clients, floods, replays and rate limits, against the real server process.

The suite's server runs with short timeouts (``probes.HEADER_TIMEOUT`` and friends,
when the server has the options); every bound below is that timeout plus a generous
margin for a loaded machine, so a server that never cuts a slow client fails, and a
merely slow machine does not.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import time
from collections.abc import Callable

import pytest

from gprochat.protocol import DEFAULT_SECRET_KEY

from .conftest import ServedProcess
from .probes import (
    BODY_IDLE_TIMEOUT,
    BODY_TIMEOUT,
    CLOSED,
    HEADER_TIMEOUT,
    KEEP_ALIVE_TIMEOUT,
    LIMITED_PASSWORD,
    LIMITED_RATE,
    TEXT_PLAIN,
    P,
    Probe,
    generate,
    generate_body,
    post,
    run,
)
from .rawhttp import Answer, Hang, exchange, read_answer, request, wait_closed

#: Added to a configured timeout before a slow client's connection must be cut.
MARGIN = 8.0



def _cut_within(limit: float) -> Callable[[list[Answer]], None]:
    def check(answers: list[Answer]) -> None:
        assert answers[0].elapsed < limit, f"cut after {answers[0].elapsed:.1f}s, not within {limit}s"
    return check


def _drip(data: bytes, every: float, count: int) -> list[bytes | float]:
    """The first ``count`` bytes of ``data``, one every ``every`` seconds."""
    pieces: list[bytes | float] = []
    for byte in data[:count]:
        pieces += [bytes([byte]), every]
    return pieces


_HEADERS = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"s" * 200 + b"\r\n\r\n"


def _body_then_silence() -> list[bytes | float]:
    body = json.dumps(generate_body()).encode()
    head = request("POST", "/api/generate", b"", headers=[TEXT_PLAIN, ("Content-Length", str(len(body)))],
                   content_length=False)
    return [head + body[:10], 60.0]


def _body_drip(every: float) -> Callable[[], list[bytes | float]]:
    def build() -> list[bytes | float]:
        body = json.dumps(generate_body()).encode()
        head = request("POST", "/api/generate", b"",
                       headers=[TEXT_PLAIN, ("Content-Length", str(len(body)))], content_length=False)
        return [head, *_drip(body, every, 60)]
    return build


SLOW = [
    P("connect and say nothing", lambda: [60.0], CLOSED, 408, shape="any",
      timeout=HEADER_TIMEOUT + MARGIN, check=_cut_within(HEADER_TIMEOUT + MARGIN)),
    P("half a request line, then silence", lambda: [b"GET /heal", 60.0], CLOSED, 408, 400, shape="any",
      timeout=HEADER_TIMEOUT + MARGIN, check=_cut_within(HEADER_TIMEOUT + MARGIN)),
    P("headers at a byte a second", lambda: _drip(_HEADERS, 1.0, len(_HEADERS)), CLOSED, 408, 400,
      shape="any", timeout=HEADER_TIMEOUT + MARGIN, check=_cut_within(HEADER_TIMEOUT + MARGIN)),
    P("body: ten bytes, then silence", _body_then_silence, CLOSED, 408, 400, shape="any",
      timeout=BODY_IDLE_TIMEOUT + MARGIN, check=_cut_within(BODY_IDLE_TIMEOUT + MARGIN)),
    P("body: a byte every body idle timeout and a half", _body_drip(BODY_IDLE_TIMEOUT * 1.5), CLOSED, 408,
      400, shape="any", timeout=BODY_IDLE_TIMEOUT * 2 + MARGIN,
      check=_cut_within(BODY_IDLE_TIMEOUT * 2 + MARGIN)),
    P("body: a byte a second, past the body timeout", _body_drip(1.0), CLOSED, 408, 400, shape="any",
      timeout=BODY_TIMEOUT + MARGIN, check=_cut_within(BODY_TIMEOUT + MARGIN)),
]


@pytest.mark.parametrize("probe", SLOW, ids=str)
async def test_slow_client(probe: Probe, server: ServedProcess) -> None:
    await run(probe, server.port)


async def test_idle_keep_alive_connection_is_closed(server: ServedProcess) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(request("GET", "/healthz"))
        answer = await asyncio.wait_for(read_answer(reader), 10)
        assert answer.status == 200
        waited = await wait_closed(reader, KEEP_ALIVE_TIMEOUT + MARGIN)
        assert waited < KEEP_ALIVE_TIMEOUT + MARGIN
    finally:
        writer.close()


async def test_flood_of_idle_connections_is_cut_and_the_server_still_answers(server: ServedProcess) -> None:
    """300 connections that say nothing: a good request is answered meanwhile; all are cut."""
    count = 300
    connections = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(count)]
    try:
        started = time.monotonic()
        [answer] = await exchange(server.port, request("GET", "/healthz"), timeout=10)
        assert answer.status == 200, answer
        bound = HEADER_TIMEOUT + MARGIN
        waits = await asyncio.gather(*(wait_closed(reader, bound) for reader, _ in connections),
                                     return_exceptions=True)
        hung = [w for w in waits if isinstance(w, Hang)]
        assert not hung, f"{len(hung)} of {count} idle connections still open after {bound}s"
        assert time.monotonic() - started < bound + 5
    finally:
        for _, writer in connections:
            writer.close()


async def test_flood_of_signed_requests(server: ServedProcess) -> None:
    """200 signed requests at once: each answered 200, or 503 with Retry-After at the stream limit."""
    bodies = [generate(generate_body(f"flood {i}")) for i in range(200)]
    results = await asyncio.gather(*(exchange(server.port, body, timeout=30) for body in bodies))
    statuses = [answer.status for [answer] in results]
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(200) >= 32, statuses  # the stream limit is 32 at once: at least that many
    for [answer] in results:
        if answer.status == 503:
            assert "retry-after" in answer.headers, answer


def _reset_socket(port: int, data: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.sendall(data)


async def test_flood_of_connections_reset_mid_request(server: ServedProcess) -> None:
    """100 clients that send half a request and reset: no traceback, the server answers on."""
    half = generate(generate_body("reset"))[:-20]
    for _ in range(100):
        _reset_socket(server.port, half)
    [answer] = await exchange(server.port, request("GET", "/healthz"), timeout=10)
    assert answer.status == 200


async def test_client_gone_mid_stream(server: ServedProcess) -> None:
    """50 clients that leave as their answer starts: no traceback, no stream slot leaked."""
    for i in range(50):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(generate(generate_body(f"leaving {i} " + "word " * 200)))
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        writer.transport.abort()
    await asyncio.sleep(0.5)
    [answer] = await exchange(server.port, request("GET", "/healthz"), timeout=10)
    assert answer.json()["streams_in_flight"] == 0, answer


# --- replays -------------------------------------------------------------------------

async def test_replay_is_refused(server: ServedProcess) -> None:
    body = generate(generate_body("only once"))
    [first] = await exchange(server.port, body)
    [second] = await exchange(server.port, body)
    assert first.status == 200 and second.status == 409, (first, second)
    assert "already used" in second.json()["error"]["message"]


async def test_replay_with_the_signature_in_upper_case_is_refused(server: ServedProcess) -> None:
    body = generate_body("case")
    [first] = await exchange(server.port, generate(body))
    body["sign"] = body["sign"].upper()
    [second] = await exchange(server.port, generate(body))
    assert (first.status, second.status) == (200, 409), (first, second)


async def test_replay_on_one_pipelined_connection(server: ServedProcess) -> None:
    body = generate(generate_body("pipelined replay"))
    first, second = await exchange(server.port, body + body, answers=2)
    assert (first.status, second.status) == (200, 409), (first, second)


async def test_concurrent_replays_only_one_wins(server: ServedProcess) -> None:
    body = generate(generate_body("race"))
    results = await asyncio.gather(*(exchange(server.port, body) for _ in range(10)))
    statuses = sorted(answer.status for [answer] in results)
    assert statuses == [200] + [409] * 9, statuses


# --- rate limits (the "limited" server: LIMITED_RATE per minute, counted per route) -------

def _limited_generate(text: str) -> bytes:
    return generate(generate_body(text, password=LIMITED_PASSWORD, secret=DEFAULT_SECRET_KEY))


async def test_rate_limit_per_route(limited: ServedProcess) -> None:
    """Past the limit on /api/generate: 429 + Retry-After; /api/auth keeps its own budget."""
    statuses = []
    for i in range(LIMITED_RATE + 1):
        [answer] = await exchange(limited.port, _limited_generate(f"rate {i}"))
        statuses.append(answer.status)
    assert statuses == [200] * LIMITED_RATE + [429], statuses
    retry_after = int(answer.headers["retry-after"])
    assert 1 <= retry_after <= 60, answer.headers
    assert "too many requests" in answer.json()["error"]["message"].lower()

    auth = post("/api/auth", json.dumps({"pass": LIMITED_PASSWORD}).encode())
    auth_statuses = []
    for _ in range(LIMITED_RATE + 1):
        [answer] = await exchange(limited.port, auth)
        auth_statuses.append(answer.status)
    assert auth_statuses == [200] * LIMITED_RATE + [429], auth_statuses


async def test_rate_limited_requests_are_not_answered_with_5xx(limited: ServedProcess) -> None:
    """A flood past the limit: 429s, never a 5xx, and the server answers /healthz meanwhile."""
    results = await asyncio.gather(*(exchange(limited.port, _limited_generate(f"flood {i}"))
                                     for i in range(50)))
    statuses = {answer.status for [answer] in results}
    assert statuses <= {200, 429}, statuses
    assert 429 in statuses
    [health] = await exchange(limited.port, request("GET", "/healthz"))
    assert health.status == 200
