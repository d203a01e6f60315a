"""Raw requests to our server: signed bodies, posts that return status, headers and body."""

from __future__ import annotations

import json
import time
from typing import Any

import aiohttp

from gprochat.protocol import DEFAULT_SECRET_KEY, build_generate_request


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
    when = int(time.time() * 1000) if timestamp is None else timestamp
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
