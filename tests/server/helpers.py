"""Raw requests to our server: signed bodies, posts that return status, headers and body."""

from __future__ import annotations

import base64
import hashlib
import io
import json
from collections.abc import Sequence
from typing import Any

import aiohttp

from gprochat.protocol import DEFAULT_SECRET_KEY, build_generate_request, signing_time

from .hostile.rawhttp import Answer, exchange

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png(size: int = 64, seed: int = 0) -> bytes:
    """``size`` bytes that start as a PNG does (the server checks the magic number only)."""
    filler = hashlib.sha256(str(seed).encode()).digest() * (size // 32 + 1)
    return (PNG_MAGIC + filler)[:size]


def image_part(raw: bytes, mime_type: str = "image/png") -> dict[str, Any]:
    """A wire image part, ``{"inline_data": {"mime_type", "data"}}``, of ``raw`` bytes."""
    return {"inline_data": {"mime_type": mime_type, "data": base64.b64encode(raw).decode()}}


def signed(
    text: str = "Hi",
    *,
    secret: str = DEFAULT_SECRET_KEY,
    timestamp: int | None = None,
    history: list[dict[str, Any]] | None = None,
    images: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A valid request body for ``text`` (and ``images``, wire image parts, after it),
    signed now (or at ``timestamp`` ms)."""
    parts = ([{"text": text}] if text or not images else []) + list(images or [])
    messages = (history or []) + [{"role": "user", "parts": parts}]
    when = signing_time() if timestamp is None else timestamp
    return build_generate_request(messages, timestamp=when, secret_key=secret, **extra)


async def post(
    base_url: str,
    body: bytes | dict[str, Any],
    path: str = "/api/generate",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    sent = {"Content-Type": "text/plain;charset=UTF-8", **(headers or {})}
    # aiohttp warns about large bytes bodies (a large image): a file-like one it reads in parts.
    payload = io.BytesIO(data) if len(data) > 1 << 20 else data
    async with (
        aiohttp.ClientSession() as session,
        session.post(base_url + path, data=payload, headers=sent) as response,
    ):
        return response.status, dict(response.headers), await response.read()


def error_message(raw: bytes) -> str:
    """The protocol's ``{"error": {"message": ...}}``; fails the test on any other shape."""
    data = json.loads(raw)
    assert set(data) == {"error"}, data
    return str(data["error"]["message"])


async def raw_exchange(
    base_url: str, request: bytes, timeout: float = 30
) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` bytes as they are on a fresh connection; the status, headers, body.

    The hostile suite's raw client (``hostile/rawhttp.py``) reads the one answer.
    """
    port = int(base_url.rsplit(":", 1)[1])
    [answer] = await exchange(port, request, head=request.startswith(b"HEAD "), timeout=timeout)
    assert answer.status is not None, "the server closed the connection without an answer"
    return answer.status, answer.headers, answer.body


async def raw_exchange_until_closed(
    base_url: str, request: bytes | Sequence[bytes | float], timeout: float = 15
) -> tuple[list[Answer], float]:
    """Send ``request`` (bytes, or pieces with pauses in seconds between) on a fresh
    connection and read every answer until the server closes it: (the answers, the
    seconds until the close). A server that keeps the connection open more than
    ``timeout`` after its last answer fails the test (``rawhttp.Hang``).
    """
    port = int(base_url.rsplit(":", 1)[1])
    *answers, closed = await exchange(port, request, answers=_MAX_ANSWERS + 1, timeout=timeout)
    assert closed.closed_without_answer, f"still open after {_MAX_ANSWERS} answers: {[*answers, closed]}"
    return answers, closed.elapsed


_MAX_ANSWERS = 16


def http_request(
    method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None,
    *, chunked: bool = False,
) -> bytes:
    """The bytes of one HTTP/1.1 request (``Connection: close``); ``chunked`` frames the body."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
        framed = b"".join(
            f"{len(body[i:i + 4096]):x}\r\n".encode() + body[i:i + 4096] + b"\r\n"
            for i in range(0, len(body), 4096)
        ) + b"0\r\n\r\n"
    else:
        lines.append(f"Content-Length: {len(body)}")
        framed = body
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + framed
