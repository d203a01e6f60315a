"""HTTP framing, limits, methods and routes, in raw bytes no client library would send.

Framing errors are answered 400 or with a closed connection (RFC 9112: reject or
close); limits with 431 / 414 / 413; unknown paths 404 and wrong methods 405, in
the protocol's error shape (OpenAI's on ``/v1``); HEAD works wherever GET does.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable

import pytest

from .conftest import ServedProcess
from .probes import (
    BEARER,
    CLOSED,
    MAX_BODY,
    MAX_HEADER_BYTES,
    MAX_HEADER_COUNT,
    MAX_URL_BYTES,
    TEXT_PLAIN,
    P,
    Probe,
    generate,
    generate_body,
    run,
)
from .rawhttp import Answer, exchange, request


def _raw(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode("latin-1")


def _no_second_answer(answers: list[Answer]) -> None:
    """After refusing ambiguous framing, the server must not read on: no smuggled answer."""
    if answers[0].status is not None:
        assert len(answers) == 2 and answers[1].status is None, answers


def _all_ok(count: int) -> Callable[[list[Answer]], None]:
    def check(answers: list[Answer]) -> None:
        assert [a.status for a in answers] == [200] * count, answers
    return check


def _statuses_are(answers: list[Answer], statuses: list[int | None]) -> None:
    assert [a.status for a in answers] == statuses, answers


def _empty_body(answers: list[Answer]) -> None:
    assert answers[0].status == 200 and answers[0].body == b"", answers


def _smuggle(framing: str) -> bytes:
    smuggled = "GET /metrics HTTP/1.1\nHost: 127.0.0.1\n\n"
    return _raw(f"POST /api/auth HTTP/1.1\nHost: 127.0.0.1\n{framing}\n\n0\n\n{smuggled}")


def _big(extra: int) -> tuple[str, str]:
    """One header that brings the head (with ``Host: 127.0.0.1``) to the byte limit, plus ``extra``."""
    used = len("Host") + len("127.0.0.1") + 4 + len("X-Big") + 4
    return ("X-Big", "b" * (MAX_HEADER_BYTES - used + extra))


def _many(count: int) -> list[tuple[str, str]]:
    """Headers that, with Host, make ``count``."""
    return [(f"X-H{i}", "v") for i in range(count - 1)]


def _url(size: int) -> str:
    path = "/healthz?q="
    return path + "u" * (size - len(path))


def _body_bytes(size: int) -> bytes:
    return request("POST", "/api/generate", b"a" * size, headers=[TEXT_PLAIN])


FRAMING = [
    P("Content-Length and Transfer-Encoding together",
      lambda: _smuggle("Content-Length: 5\nTransfer-Encoding: chunked"), 400, CLOSED, answers=2,
      check=_no_second_answer, shape="any"),
    P("Transfer-Encoding then Content-Length",
      lambda: _smuggle("Transfer-Encoding: chunked\nContent-Length: 60"), 400, CLOSED, answers=2,
      check=_no_second_answer, shape="any"),
    P("chunk size not hex",
      lambda: _raw("POST /api/auth HTTP/1.1\nHost: 127.0.0.1\nTransfer-Encoding: chunked\n\nzz\nabc\n0\n\n"),
      400, CLOSED, shape="any"),
    P("chunk size 2^80", lambda: _raw("POST /api/auth HTTP/1.1\nHost: 127.0.0.1\nTransfer-Encoding: chunked"
                                      f"\n\n{2**80:x}\nabc"),
      400, 413, CLOSED, shape="any", timeout=10),
    P("chunk size negative",
      lambda: _raw("POST /api/auth HTTP/1.1\nHost: 127.0.0.1\nTransfer-Encoding: chunked\n\n-5\nabc\n0\n\n"),
      400, CLOSED, shape="any"),
    P("chunk longer than its size",
      lambda: _raw("POST /api/auth HTTP/1.1\nHost: 127.0.0.1\nTransfer-Encoding: chunked\n\n"
                   "2\nabcdef\n0\n\n"),
      400, CLOSED, shape="any"),
    P("Transfer-Encoding: gzip", lambda: _raw("POST /api/auth HTTP/1.1\nHost: 127.0.0.1\n"
                                              "Transfer-Encoding: gzip\n\nxx"),
      400, CLOSED, shape="any"),
    P("negative Content-Length", lambda: _raw("POST /api/auth HTTP/1.1\nHost: 127.0.0.1\n"
                                              "Content-Length: -1\n\n{}"),
      400, CLOSED, shape="any"),
    P("two different Content-Lengths", lambda: _raw("POST /api/auth HTTP/1.1\nHost: 127.0.0.1\n"
                                                    "Content-Length: 2\nContent-Length: 20\n\n{}"),
      400, CLOSED, shape="any"),
    P("Content-Length not a number", lambda: _raw("POST /api/auth HTTP/1.1\nHost: 127.0.0.1\n"
                                                  "Content-Length: 2x\n\n{}"),
      400, CLOSED, shape="any"),
    P("Content-Length with a plus sign", lambda: _raw("POST /api/auth HTTP/1.1\nHost: 127.0.0.1\n"
                                                      "Content-Length: +2\n\n{}"),
      400, CLOSED, shape="any"),
    P("Content-Length of 2^80 digits' worth", lambda: _raw("POST /api/generate HTTP/1.1\nHost: 127.0.0.1\n"
                                                           f"Content-Length: {2**80}\n\n{{}}"),
      413, 400, CLOSED, shape="any", timeout=10),
    P("garbage request line", lambda: b"HELLO THERE\r\n\r\n", 400, CLOSED, shape="any"),
    P("binary garbage", lambda: bytes(range(256)) * 4, 400, CLOSED, shape="any"),
    P("TLS hello on the plain port", lambda: bytes.fromhex("16030100a5010000a10303") + b"\x00" * 160,
      400, CLOSED, shape="any"),
    P("method with a space", lambda: b"GE T /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 400, CLOSED,
      shape="any"),
    P("NUL in a header value", lambda: b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: a\x00b\r\n\r\n",
      400, CLOSED, shape="any"),
    P("header without a colon", lambda: b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nNoColon\r\n\r\n",
      400, CLOSED, shape="any"),
    P("space before the colon", lambda: b"GET /healthz HTTP/1.1\r\nHost : 127.0.0.1\r\n\r\n", 400, CLOSED,
      shape="any"),
    P("obsolete line folding", lambda: b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: a\r\n b\r\n\r\n",
      400, CLOSED, shape="any"),
    P("bare LF line endings", lambda: b"GET /healthz HTTP/1.1\nHost: 127.0.0.1\n\n", 200, 400, CLOSED,
      shape="any"),
]

LIMITS = [
    P("1,000 headers", lambda: request("GET", "/healthz", headers=[(f"X-H{i}", "v") for i in range(1000)]),
      431, shape="any"),
    P("one 100 KB header", lambda: request("GET", "/healthz", headers=[("X-Big", "b" * 100_000)]), 431,
      shape="any"),
    P("a 100 KB URL", lambda: request("GET", "/healthz?q=" + "u" * 100_000), 414, shape="any"),
    P("a 100 KB path on the gateway", lambda: request("GET", "/v1/models/" + "m" * 100_000, headers=[BEARER]),
      414, shape="any"),
    # Host and Content-Length are headers too; the head is counted as name + value + 4 per header.
    P(f"exactly {MAX_HEADER_COUNT} headers",
      lambda: request("GET", "/healthz", headers=_many(MAX_HEADER_COUNT)),
      200),
    P(f"{MAX_HEADER_COUNT + 1} headers",
      lambda: request("GET", "/healthz", headers=_many(MAX_HEADER_COUNT + 1)),
      431, shape="any"),
    P(f"headers of exactly {MAX_HEADER_BYTES} bytes", lambda: request("GET", "/healthz", headers=[_big(0)]),
      200),
    P(f"headers of {MAX_HEADER_BYTES + 1} bytes", lambda: request("GET", "/healthz", headers=[_big(1)]), 431,
      shape="any"),
    P(f"a URL of exactly {MAX_URL_BYTES} bytes", lambda: request("GET", _url(MAX_URL_BYTES)), 200),
    P(f"a URL of {MAX_URL_BYTES + 1} bytes", lambda: request("GET", _url(MAX_URL_BYTES + 1)), 414,
      shape="any"),
    P("invalid Host", lambda: request("GET", "/healthz", host="bad host!"), 400, shape="any"),
    P("Host with a path", lambda: request("GET", "/healthz", host="127.0.0.1/evil"), 400, shape="any"),
    P("no Host on HTTP/1.1", lambda: request("GET", "/healthz", host=""), 400, shape="any"),
    P("two Host headers", lambda: request("GET", "/healthz", headers=[("Host", "other.example")]), 400,
      shape="any"),
    P("HTTP/0.9: no version", lambda: b"GET /healthz\r\n\r\n", 400,
      mentions=("no http version",)),
    P("HTTP/1.0 without Host", lambda: request("GET", "/healthz", host="", version="HTTP/1.0"), 200),
    P("HTTP/2 preface on HTTP/1", lambda: b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400, 404, 405, CLOSED,
      shape="any"),
    P("Expect: 100-continue with a body over the limit",
      lambda: request("POST", "/api/generate", headers=[("Content-Length", str(MAX_BODY * 10)),
                                                         ("Expect", "100-continue")], content_length=False),
      413, mentions=("too large",), timeout=10),
    P("3 MB body written before reading", lambda: _body_bytes(3_000_000), 413, write_first=True,
      mentions=("too large",), timeout=30),
    P("20 MB body written before reading", lambda: _body_bytes(20_000_000), 413, write_first=True,
      mentions=("too large",), timeout=60),
]

PIPELINING = [
    P("three pipelined GETs", lambda: request("GET", "/healthz") * 3, 200, answers=3, check=_all_ok(3)),
    P("two pipelined signed requests",
      lambda: b"".join(generate(generate_body(f"pipelined {i}")) for i in range(2)), 200, answers=2,
      check=_all_ok(2)),
    P("a GET then garbage in the same packet", lambda: request("GET", "/healthz") + b"HELLO THERE\r\n\r\n",
      200, 400, CLOSED, answers=3, shape="any",
      check=lambda answers: _statuses_are(answers, [200, 400, None])),
    P("a GET, a GET, then binary garbage", lambda: request("GET", "/healthz") * 2 + bytes(range(256)),
      200, 400, CLOSED, answers=4, shape="any",
      check=lambda answers: _statuses_are(answers, [200, 200, 400, None])),
    P("a 413 then a pipelined GET", lambda: generate(b"x" * (MAX_BODY + 1)) + request("GET", "/healthz"),
      413, 200, CLOSED, answers=2, mentions=("too large",)),
]


def _close_delimited(answers: list[Answer]) -> None:
    """An answer to HTTP/1.0 without a length: no chunked framing, the body until the close."""
    [answer] = answers
    assert answer.status == 200, answer
    assert "transfer-encoding" not in answer.headers and "content-length" not in answer.headers, answer
    assert answer.headers["connection"] == "close" and answer.body, answer
    assert b"\r\n0\r\n" not in answer.body, answer  # no chunk framing leaked into the text


def _generate_1_0(text: str, *headers: tuple[str, str]) -> bytes:
    body = json.dumps(generate_body(text)).encode()
    return request("POST", "/api/generate", body, headers=[TEXT_PLAIN, *headers], version="HTTP/1.0")


# ApacheBench (ab) and some proxies speak HTTP/1.0, which has no chunked framing.
VERSIONS = [
    P("HTTP/1.0 streamed answer", lambda: _generate_1_0("over HTTP/1.0"), 200, check=_close_delimited),
    P("HTTP/1.0 with keep-alive, streamed answer",
      lambda: _generate_1_0("kept alive", ("Connection", "keep-alive")), 200, check=_close_delimited),
]


ROUTES = [
    P("unknown path", lambda: request("GET", "/nope"), 404, mentions=("not found", "/nope")),
    P("unknown path under /api", lambda: request("POST", "/api/nope", b"{}"), 404),
    P("path traversal", lambda: request("GET", "/../../etc/passwd"), 404, 400),
    P("encoded traversal", lambda: request("GET", "/api/..%2f..%2fetc%2fpasswd"), 404),
    P("unknown path under /v1", lambda: request("GET", "/v1/nope", headers=[BEARER]), 404, shape="openai"),
    P("GET /api/generate", lambda: request("GET", "/api/generate"), 405, mentions=("method", "post")),
    P("PUT /api/generate", lambda: request("PUT", "/api/generate", json.dumps(generate_body()).encode()),
      405, mentions=("method", "post")),
    P("DELETE /api/auth", lambda: request("DELETE", "/api/auth"), 405, mentions=("method", "post")),
    P("GET /v1/chat/completions", lambda: request("GET", "/v1/chat/completions", headers=[BEARER]), 405,
      shape="openai", mentions=("method", "post")),
    P("POST /healthz", lambda: request("POST", "/healthz", b"{}"), 405, mentions=("method", "get")),
    P("POST /metrics", lambda: request("POST", "/metrics", b"{}"), 405, mentions=("method", "get")),
    P("an invented method", lambda: request("BREW", "/healthz"), 405, 400, CLOSED, shape="any"),
    P("TRACE", lambda: request("TRACE", "/healthz"), 405, shape="any"),
    P("HEAD /healthz", lambda: request("HEAD", "/healthz"), 200, head=True, check=_empty_body),
    P("HEAD /metrics", lambda: request("HEAD", "/metrics"), 200, head=True, check=_empty_body),
    P("HEAD /v1/models", lambda: request("HEAD", "/v1/models", headers=[BEARER]), 200, head=True,
      check=_empty_body),
    P("HEAD /api/generate", lambda: request("HEAD", "/api/generate"), 405, head=True),
    P("GET / (the chat page)", lambda: request("GET", "/"), 200),
    P("HEAD /", lambda: request("HEAD", "/"), 200, head=True, check=_empty_body),
    P("POST /", lambda: request("POST", "/", b"{}"), 405, mentions=("method", "get")),
    P("an asset outside the page's folder", lambda: request("GET", "/assets/x/../../../pyproject.toml"), 404,
      400, shape="any"),
    P("an encoded traversal in an asset", lambda: request("GET", "/assets/x/..%2f..%2f__init__.py"), 404,
      shape="any"),
    P("GET /healthz", lambda: request("GET", "/healthz"), 200),
    P("GET /metrics", lambda: request("GET", "/metrics"), 200),
]


@pytest.mark.parametrize("probe", FRAMING + LIMITS + PIPELINING + VERSIONS + ROUTES, ids=str)
async def test_http_layer(probe: Probe, server: ServedProcess) -> None:
    await run(probe, server.port)


async def _refusals_counted(port: int, status: int, reason: str) -> float:
    [answer] = await exchange(port, request("GET", "/metrics"))
    for line in answer.body.decode().splitlines():
        if line.startswith("gprochat_http_refusals_total{") and f'status="{status}"' in line \
                and f'reason="{reason}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.parametrize(("data", "status", "reason"), [
    (lambda: request("GET", "/healthz?q=" + "u" * 100_000), 414, "url_too_long"),
    (lambda: b"GET /healthz\r\n\r\n", 400, "no_http_version"),
    (lambda: request("GET", "/healthz") + b"HELLO THERE\r\n\r\n", 400, "malformed"),
], ids=["long-url", "http-0.9", "garbage-after-a-request"])
async def test_each_refusal_is_in_the_servers_access_log_and_metrics(
    server: ServedProcess, data: Callable[[], bytes], status: int, reason: str,
) -> None:
    before = await _refusals_counted(server.port, status, reason)
    start = server.log_size()
    answers = await exchange(server.port, data(), answers=3)
    assert status in [a.status for a in answers], answers
    line = (rf"INFO gprochat\.access: GET other {status} in [\d.]+ ms, 0 B to 127\.0\.0\.1, "
            rf"refused: {reason} \(")
    for _ in range(100):  # logged as the answer goes out: the client may read it first
        if re.search(line, server.log(start)):
            break
        await asyncio.sleep(0.02)
    assert re.search(line, server.log(start)), server.log(start)
    assert await _refusals_counted(server.port, status, reason) == before + 1
