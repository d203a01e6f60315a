"""The GeminiProChat routes: ``POST /api/generate`` and ``POST /api/auth``."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from .. import protocol
from ..errors import BackendError
from .backends import Backend, Conversation, Turn
from .config import ServerConfig

__all__ = ["router", "error_response"]

logger = logging.getLogger("gprochat.server")

router = APIRouter()

STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class StreamAborted(Exception):
    """Raised inside a started response so the server cuts the connection.

    The protocol has no in-band error signal: a cut body is how the client learns
    that the answer is incomplete.
    """


def error_response(
    status: int, message: str, code: object = None, headers: dict[str, str] | None = None
) -> Response:
    """The protocol's ``{"error": {...}}`` body with ``status``."""
    return Response(
        protocol.error_body(message, code),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


@router.post("/api/generate", include_in_schema=False)
async def generate(request: Request) -> Response:
    config: ServerConfig = request.app.state.config
    backend: Backend = request.app.state.backend
    try:
        generate_request = protocol.parse_generate_request(await request.body())
    except protocol.InvalidRequest as exc:
        return error_response(400, exc.message)
    if config.passwords and not protocol.password_matches(
        generate_request.password, config.passwords
    ):
        return error_response(401, protocol.INVALID_PASSWORD)
    if config.check_signature and not protocol.verify_signature(
        generate_request, config.secret_key
    ):
        return error_response(401, protocol.INVALID_SIGNATURE)

    conversation = Conversation(
        message=generate_request.text,
        history=tuple(Turn(m.role, m.text) for m in generate_request.history),
        system=config.system_prompt,
    )
    chunks = backend.stream(conversation).__aiter__()
    # Wait for the first text before answering, so a backend that fails at once
    # gets a proper error status instead of an empty 200.
    try:
        first = await anext_text(chunks)
    except BackendError as exc:
        await _close(chunks)
        headers = {"Retry-After": f"{exc.retry_after:.0f}"} if exc.retry_after else None
        return error_response(exc.status, exc.message, "Error", headers)
    except Exception as exc:  # noqa: BLE001 - a broken backend must not crash the route
        await _close(chunks)
        logger.exception("backend %s failed before any text", backend.name)
        return error_response(500, f"The model backend failed: {exc}", "Error")
    return StreamingResponse(
        _stream(first, chunks, backend.name),
        media_type="text/plain; charset=utf-8",
        headers=STREAM_HEADERS,
    )


async def anext_text(chunks: AsyncIterator[str]) -> str:
    """The first non-empty chunk, or ``""`` for an empty answer."""
    async for chunk in chunks:
        if chunk:
            return chunk
    return ""


async def _stream(first: str, chunks: AsyncIterator[str], backend_name: str) -> AsyncIterator[bytes]:
    try:
        if first:
            yield first.encode()
        async for chunk in chunks:
            if chunk:
                yield chunk.encode()
    except Exception as exc:
        logger.warning(
            "backend %s failed mid-answer (%s); cutting the connection so the client "
            "sees an incomplete body",
            backend_name,
            exc,
        )
        raise StreamAborted(str(exc)) from exc
    finally:
        await _close(chunks)


async def _close(chunks: AsyncIterator[str]) -> None:
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        await aclose()


@router.post("/api/auth", include_in_schema=False)
async def auth(request: Request) -> Response:
    config: ServerConfig = request.app.state.config
    try:
        data = json.loads(await request.body() or b"{}")
    except ValueError:
        return error_response(400, "Request body is not valid JSON: send {\"pass\": \"...\"}.")
    given = data.get("pass") if isinstance(data, dict) else None
    ok = not config.passwords or protocol.password_matches(
        given if isinstance(given, str) else None, config.passwords
    )
    return JSONResponse({"code": 0 if ok else -1})
