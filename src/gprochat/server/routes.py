"""The GeminiProChat routes: ``POST /api/generate`` and ``POST /api/auth``, and our
``GET /api/models`` (the names ``/api/generate``'s optional ``model`` field takes)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .. import protocol
from ..images import Base64Run
from .backends import Backend, Conversation, Turn
from .config import ServerConfig
from .guard import RequestGuard
from .metrics import ServerMetrics
from .refusals import Refusal
from .replay import ReplayGuard
from .streaming import (
    Answer,
    AnswerFailed,
    ChunkStream,
    StreamAborted,
    answer_conversation,
    encode_headers,
)

__all__ = ["STREAM_HEADERS", "StreamAborted", "auth", "generate", "models"]

logger = logging.getLogger("gprochat.server")

STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_RAW_HEADERS = encode_headers("text/plain; charset=utf-8", STREAM_HEADERS)
#: Base64 characters of images above which a request's images are checked in a thread.
_CHECK_IN_THREAD = 1 << 20


async def generate(request: Request) -> Response:
    """The guard's checks in order, then the backend's answer, streamed.

    413 size, 429 rate, 413 content parts, 400 body/history (an image in a model turn too), 413
    conversation limits, 400/413 images, 401 password, 401 signature, 401 timestamp
    window, 409 replay, 400 unknown model (after the password, so a locked site names
    its models to no one else), 400 images the backend cannot see, 503 concurrent streams.
    """
    state = request.app.state
    config: ServerConfig = state.config
    guard: RequestGuard = state.guard
    body = await guard.admit(request, "generate")
    try:
        # A large image's base64 stays in the body's bytes (no text, no copy by the parser).
        text, kept = protocol.decode_body_keeping_base64(body)
        del body  # else parsed from its text alone: a large body is held twice, not three times
        data = protocol.generate_body_json(text, kept)
        del text
        guard.check_part_count(data, "parts")  # before a model is built per part
        generate_request = protocol.parse_generate_request(data)
    except protocol.InvalidRequest as exc:
        raise Refusal(400, exc.message) from exc
    del data
    messages = generate_request.messages
    image_parts = _image_parts(messages, kept)
    guard.check_conversation([m.text for m in messages])
    as_text = [b64 for parts in image_parts for _, _, b64 in parts if isinstance(b64, str)]
    if sum(len(b64) for b64 in as_text) > _CHECK_IN_THREAD:
        # Checking scans base64 text once (about 1 ms per MiB, gprochat.images; a run kept
        # in the body was scanned while decoding it): a large request's images are
        # scanned off the event loop, so that the answers already streaming are not held
        # up meanwhile.
        images = await asyncio.to_thread(guard.check_images, image_parts)
    else:
        images = guard.check_images(image_parts)
    guard.check_password(generate_request.password)
    if config.check_signature:
        if not protocol.verify_signature(generate_request, config.secret_key):
            raise Refusal(401, protocol.INVALID_SIGNATURE)
        replay: ReplayGuard = state.replay
        await replay.check(generate_request.time, generate_request.sign)
    model = _chosen_model(state.backend, generate_request.model)

    conversation = Conversation(
        message=generate_request.text,
        history=tuple(
            Turn(m.role, m.text, pictures)
            for m, pictures in zip(generate_request.history, images[:-1], strict=True)
        ),
        images=images[-1],
        system=config.system_prompt,
        model=model,
        temperature=generate_request.temperature,
    )
    backend: Backend = state.backend
    metrics: ServerMetrics = state.metrics
    try:
        answer = await answer_conversation(backend, conversation, guard, metrics)
    except AnswerFailed as exc:
        return exc.failure.response(openai=False)
    return ChunkStream(_stream(answer, backend.name, metrics), on_close=answer.close,
                       raw_headers=_RAW_HEADERS)


def _chosen_model(backend: Backend, model: str | None) -> str | None:
    """The listed name the request's ``model`` stands for (None: the default), or a 400."""
    if not model:
        return None
    resolved = backend.resolve(model)
    if resolved is None:
        known = backend.models()
        raise Refusal(
            400,
            f"Unknown model {model!r}: this server offers {', '.join(known)} (GET "
            f"{protocol.MODELS_PATH} lists them); leave \"model\" out for the default ({known[0]}).",
            param="model",
            code="model_not_found",
        )
    return resolved


def _image_parts(
    messages: list[protocol.WireMessage], kept: Mapping[str, Base64Run]
) -> list[list[tuple[int, str, str | Base64Run]]]:
    """Each message's image parts as ``guard.check_images`` takes them (a placeholder
    of ``kept`` as its run: its alphabet is checked already, the rest is not).

    Only user messages may hold images: a model's turn is the text it answered (the
    OpenAI API and the local model have no image in an assistant's message either).
    """
    found: list[list[tuple[int, str, str | Base64Run]]] = []
    for index, message in enumerate(messages):
        parts = [(number, part.inline_data.mime_type, kept.get(part.inline_data.data, part.inline_data.data))
                 for number, part in enumerate(message.parts) if part.inline_data is not None]
        if parts and message.role != "user":
            raise Refusal(
                400,
                f"messages[{index}].parts[{parts[0][0]}] is an image in a {message.role!r} "
                "turn: only user messages may hold images (a model's turn is its text). "
                "Attach it to a user message.",
            )
        found.append(parts)
    return found


async def _stream(answer: Answer, backend_name: str, metrics: ServerMetrics) -> AsyncIterator[bytes]:
    try:
        if answer.first:
            yield answer.first.encode()
        async for chunk in answer.rest:
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


async def auth(request: Request) -> Response:
    """``{"code": 0}`` when the password is right (or none is set), ``{"code": -1}`` if not."""
    guard: RequestGuard = request.app.state.guard
    # Rate-limited like /api/generate, on its own budget: it answers whether a password is right.
    body = await guard.admit(request, "auth")
    try:
        data = protocol.parse_json(body or b"{}")
    except protocol.InvalidRequest as exc:
        raise Refusal(400, f"{exc.message} Send {{\"pass\": \"...\"}}.") from exc
    given = data.get("pass") if isinstance(data, dict) else None
    ok = not guard.passwords or protocol.password_matches(
        given if isinstance(given, str) else None, guard.passwords
    )
    return JSONResponse({"code": 0 if ok else -1})


async def models(request: Request) -> Response:
    """``{"models": [...], "default": ...}``: the names ``/api/generate``'s ``model`` takes.

    Locked like ``/api/generate``: on a site with a password, only for a request that
    carries it (``Authorization: Bearer PASSWORD``), and on ``/api/auth``'s rate budget,
    since the answer also says whether a password is right.
    """
    guard: RequestGuard = request.app.state.guard
    await guard.admit(request, "auth")
    if guard.passwords:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Refusal(401, "This site needs its password to list its models: send "
                               "'Authorization: Bearer PASSWORD'.")
        guard.check_password(token.strip())
    backend: Backend = request.app.state.backend
    names = backend.models()
    return JSONResponse({"models": names, "default": names[0]},
                        headers={"Cache-Control": "no-store"})
