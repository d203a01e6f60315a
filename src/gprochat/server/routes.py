"""The GeminiProChat routes: ``POST /api/generate`` and ``POST /api/auth``."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import AsyncIterator, Callable

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from .. import protocol
from .._streams import aclose, first_text
from ..errors import BackendError
from .backends import Backend, Conversation, Turn
from .config import ServerConfig
from .guard import Rejected, RequestGuard
from .metrics import ServerMetrics
from .replay import ReplayGuard
from .streaming import ChunkStream, encode_headers

__all__ = ["StreamAborted", "error_response", "router", "start_stream"]

logger = logging.getLogger("gprochat.server")

router = APIRouter()

STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_RAW_HEADERS = encode_headers("text/plain; charset=utf-8", STREAM_HEADERS)


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
    """The guard's checks in order, then the backend's answer, streamed.

    413 size, 429 rate, 400 body/history, 413 conversation limits, 401 password,
    401 signature, 401 timestamp window, 409 replay, 503 concurrent streams.
    """
    state = request.app.state
    config: ServerConfig = state.config
    guard: RequestGuard = state.guard
    guard.check_declared_size(request)
    await guard.rate_limiter.check(request)
    try:
        generate_request = protocol.parse_generate_request(await guard.read_body(request))
    except protocol.InvalidRequest as exc:
        raise Rejected(400, exc.message) from exc
    check_conversation_limits(generate_request, config)
    if config.passwords and not protocol.password_matches(
        generate_request.password, config.passwords
    ):
        raise Rejected(401, protocol.INVALID_PASSWORD)
    if config.check_signature:
        if not protocol.verify_signature(generate_request, config.secret_key):
            raise Rejected(401, protocol.INVALID_SIGNATURE)
        replay: ReplayGuard = state.replay
        await replay.check(generate_request.time, generate_request.sign)

    release = guard.streams.try_acquire()
    conversation = Conversation(
        message=generate_request.text,
        history=tuple(Turn(m.role, m.text) for m in generate_request.history),
        system=config.system_prompt,
    )
    return await start_stream(request, conversation, release)


def check_conversation_limits(generate_request: protocol.GenerateRequest, config: ServerConfig) -> None:
    """413 for too many messages or a message too long, naming which."""
    count = len(generate_request.messages)
    if config.max_messages and count > config.max_messages:
        raise Rejected(
            413,
            f"Too many messages: {count}; this server accepts at most {config.max_messages}. "
            "Drop the oldest turns of the conversation.",
        )
    if config.max_message_chars:
        for index, message in enumerate(generate_request.messages):
            length = len(message.text)
            if length > config.max_message_chars:
                raise Rejected(
                    413,
                    f"Message too long: messages.{index} has {length} characters; this server "
                    f"accepts at most {config.max_message_chars} per message.",
                )


async def start_stream(
    request: Request, conversation: Conversation, release: Callable[[], None]
) -> Response:
    """Wait for the backend's first text, then stream the rest; ``release`` frees the slot.

    Waiting for the first text lets a backend that fails at once get a proper error
    status instead of an empty 200.
    """
    backend: Backend = request.app.state.backend
    metrics: ServerMetrics = request.app.state.metrics
    chunks: AsyncIterator[str] | None = None
    try:
        chunks = backend.stream(conversation).__aiter__()
        first = await first_text(chunks)
    except BaseException as exc:
        release()
        if chunks is not None:
            await aclose(chunks)
        if not isinstance(exc, Exception):
            raise
        metrics.backend_errors.labels(backend.name, "before_text").inc()
        return backend_error_response(exc, backend.name)

    answer = chunks  # bound for the closure: not None past the try

    async def on_close() -> None:
        release()
        await aclose(answer)

    return ChunkStream(
        _stream(first, answer, backend.name, metrics), on_close=on_close, raw_headers=_RAW_HEADERS
    )


def backend_error_response(exc: Exception, backend_name: str) -> Response:
    """The status a backend failure is answered with (before any text was sent)."""
    if not isinstance(exc, BackendError):
        logger.error("backend %s failed before any text: %r", backend_name, exc, exc_info=exc)
        return error_response(500, f"The model backend failed: {exc}", "Error")
    status = exc.status if 400 <= exc.status <= 599 else 502
    if status in (401, 403, 407):
        # The upstream refused *our* credentials: that is the operator's problem, and a
        # 401 would make the client believe its own password or signature is wrong.
        logger.error("backend %s refused the server's credentials: %s", backend_name, exc.message)
        return error_response(
            502,
            f"The server's model backend refused its credentials (a server configuration "
            f"error; tell the operator): {exc.message}",
            "Error",
        )
    logger.warning("backend %s failed before any text (%s): %s", backend_name, status, exc.message)
    headers = {"Retry-After": f"{math.ceil(exc.retry_after)}"} if exc.retry_after else None
    return error_response(status, exc.message, "Error", headers)


async def _stream(
    first: str, chunks: AsyncIterator[str], backend_name: str, metrics: ServerMetrics
) -> AsyncIterator[bytes]:
    try:
        if first:
            yield first.encode()
        async for chunk in chunks:
            if chunk:
                yield chunk.encode()
    except Exception as exc:
        metrics.backend_errors.labels(backend_name, "mid_stream").inc()
        logger.warning(
            "backend %s failed mid-answer (%s); cutting the connection so the client "
            "sees an incomplete body",
            backend_name,
            exc,
        )
        raise StreamAborted(str(exc)) from exc
    finally:
        await aclose(chunks)


@router.post("/api/auth", include_in_schema=False)
async def auth(request: Request) -> Response:
    config: ServerConfig = request.app.state.config
    guard: RequestGuard = request.app.state.guard
    # Rate-limited like /api/generate: it answers whether a password is right.
    await guard.rate_limiter.check(request, scope="auth")
    try:
        data = json.loads(await guard.read_body(request) or b"{}")
    except ValueError:
        return error_response(400, "Request body is not valid JSON: send {\"pass\": \"...\"}.")
    given = data.get("pass") if isinstance(data, dict) else None
    ok = not config.passwords or protocol.password_matches(
        given if isinstance(given, str) else None, config.passwords
    )
    return JSONResponse({"code": 0 if ok else -1})
