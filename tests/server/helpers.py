"""Raw requests to our server: signed bodies, posts that return status, headers and body."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from gprochat.protocol import DEFAULT_SECRET_KEY, build_generate_request, signing_time

from .hostile.rawhttp import exchange


def signed(
    text: str = "Hi",
    *,
    secret: str = DEFAULT_SECRET_KEY,
    timestamp: int | None = None,
    history: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A valid request body for ``text``, signed now (or at ``timestamp`` ms)."""
    messages = (history or []) + [{"role": "user", "parts": [{"text": text}]}]
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
    async with (
        aiohttp.ClientSession() as session,
        session.post(base_url + path, data=data, headers=sent) as response,
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
