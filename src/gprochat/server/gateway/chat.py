"""``POST /v1/chat/completions``: an answer as one ``chat.completion`` or as a stream.

A streamed answer is server-sent events, ``data: {chat.completion.chunk}`` lines ending
``data: [DONE]``. When the upstream fails after the stream started, a last
``data: {"error": {...}}`` event and ``data: [DONE]`` are sent, then the connection is
cut (no chunked terminator), so no client can take the answer for a complete one.

Usage: when the backend reports the upstream's own figures (the openai backend asks
for them), they are passed on with the upstream's completion id; otherwise they are
estimated (``gprochat.openai.builder.estimate_usage``) and marked ``"estimated": true``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Optional

from pydantic import ValidationError
from starlette.datastructures import State
from starlette.requests import Request
from starlette.responses import Response

from ... import protocol
from ...errors import InvalidParameterError
from ...images import Base64Run
from ...openai.builder import CompletionBuilder, estimate_usage, stream_chunk_json
from ...openai.params import check_parameters, normalize_messages
from ...openai.requests import ChatCompletionRequest
from ...openai.types import CompletionUsage, wire_json
from ..backends import AnswerReport, Backend
from ..config import ServerConfig
from ..failures import backend_failure
from ..guard import RequestGuard
from ..metrics import ServerMetrics
from ..refusals import Refusal
from ..routes import STREAM_HEADERS
from ..streaming import AnswerFailed, ChunkStream, answer_conversation, encode_headers
from .conversation import resolve_model, to_conversation
from .errors import from_validation_error
from .fetch import ImageFetcher
from .images import IMAGE_URL_PATH, check_images, split_images

__all__ = ["create_chat_completion", "parse_request"]

logger = logging.getLogger("gprochat.server.gateway")

_SSE_HEADERS = encode_headers("text/event-stream; charset=utf-8", STREAM_HEADERS)


def parse_request(
    body: bytes | str,
    content_type: Optional[str] = None,
    guard: Optional[RequestGuard] = None,
    kept: Optional[Mapping[str, Base64Run]] = None,
) -> ChatCompletionRequest:
    """The request (from the body or its text), or ``Refusal(400)`` naming what is wrong.

    With a ``guard``, its content parts are counted (413) before the models are built.
    With ``kept`` (the text is ``protocol.decode_body_keeping_base64``'s), an image
    part's data URL may be the placeholder of a run in ``kept``.
    """
    media_type = (content_type or "application/json").partition(";")[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise Refusal(
            400, f"Content-Type {media_type!r} is not JSON: send the body as application/json "
            "(a JSON object with model and messages)."
        )
    if not body.strip():
        raise Refusal(400, "Empty request body: send a JSON object with model and messages.")
    try:
        data = protocol.parse_json(body, kept, images_at=IMAGE_URL_PATH, data_urls=True)
    except protocol.InvalidRequest as exc:
        raise Refusal(400, exc.message) from exc
    if guard is not None:
        guard.check_part_count(data, "content")
    try:
        return ChatCompletionRequest.model_validate(data)
    except ValidationError as exc:
        raise from_validation_error(exc) from exc


async def create_chat_completion(request: Request) -> Response:
    state = request.app.state
    guard: RequestGuard = state.guard
    raw = await guard.admit(request, "gateway", bearer=True)
    try:
        # A large image's base64 stays in the body's bytes (no text, no copy by the parser).
        text, kept = protocol.decode_body_keeping_base64(raw)
    except protocol.InvalidRequest as exc:
        raise Refusal(400, exc.message) from exc
    del raw  # else parsed from its text alone: a large body is held twice, not three times
    body = parse_request(text, request.headers.get("content-type"), guard, kept)
    del text
    config: ServerConfig = state.config
    try:
        check_parameters(body.model_dump(exclude_unset=True))
        texts, image_parts = split_images(
            [m.model_dump(exclude_none=True) for m in body.messages],
            fetching=config.fetch_image_urls,
        )
        messages = normalize_messages(texts)
    except InvalidParameterError as exc:
        raise Refusal(400, exc.message, param=exc.param) from exc
    guard.check_conversation([m["content"] for m in messages], where="messages[{index}]")
    backend: Backend = state.backend
    model = resolve_model(backend, body.model)
    images = await check_images(image_parts, guard, _image_fetcher(state), kept)
    report = AnswerReport()
    conversation = to_conversation(model, messages, body, system_prompt=config.system_prompt,
                                   report=report, images=images)
    metrics: ServerMetrics = state.metrics
    try:
        answer = await answer_conversation(backend, conversation, guard, metrics, param="messages")
    except AnswerFailed as exc:
        return exc.failure.response(openai=True)
    include_usage = bool(body.stream and body.stream_options and body.stream_options.include_usage)
    # The upstream's own id when it gave one (it has, by its first text).
    builder = CompletionBuilder(model, completion_id=report.id, include_usage=include_usage)

    if not body.stream:
        try:
            parts = [answer.first]
            parts += [text async for text in answer.rest]
        except Exception as exc:
            return backend_failure(exc, backend.name).response(openai=True)
        finally:
            await answer.close()
        text = "".join(parts)
        completion = builder.completion(
            text, _usage(report, messages, text), report.finish_reason or "stop"
        )
        return Response(wire_json(completion), media_type="application/json")

    events = stream_chunk_json(
        builder,
        answer.rest,
        first=answer.first,
        messages=messages if include_usage else None,
        reported_usage=lambda: _reported_usage(report),
        reported_finish=lambda: report.finish_reason,
        prefix=b"data: ",
        suffix=b"\n\n",
        end=b"data: [DONE]\n\n",
        join_ready=True,
    )
    # A failure after the stream started: an error event, data: [DONE], then the
    # connection is cut (no chunked terminator), so no client takes it for complete.
    return ChunkStream(
        events,
        on_close=answer.close,
        raw_headers=_SSE_HEADERS,
        on_failure=_error_event(backend),
    )


def _image_fetcher(state: State) -> Optional[ImageFetcher]:
    """The server's fetcher when ``--fetch-image-urls`` is on (made on first use), else None.

    A test may put its own on ``app.state.image_fetcher`` (one that lets 127.0.0.1 through).
    """
    config: ServerConfig = state.config
    if not config.fetch_image_urls:
        return None
    fetcher: Optional[ImageFetcher] = getattr(state, "image_fetcher", None)
    if fetcher is None:
        fetcher = state.image_fetcher = ImageFetcher(
            max_bytes=config.max_image_bytes, timeout=config.image_fetch_timeout
        )
    return fetcher


def _reported_usage(report: AnswerReport) -> Optional[CompletionUsage]:
    if report.usage is None:
        return None
    return CompletionUsage.model_validate(report.usage)


def _usage(report: AnswerReport, messages: list[dict[str, str]], text: str) -> CompletionUsage:
    reported = _reported_usage(report)
    if reported is not None:
        return reported
    return estimate_usage(messages, text)


def _error_event(backend: Backend) -> Callable[[Exception], bytes]:
    """An upstream failure mid-stream: a last error event and ``data: [DONE]`` (then the cut)."""

    def last_words(exc: Exception) -> bytes:
        refusal = backend_failure(exc, backend.name)
        logger.warning("upstream failed mid-stream (%s); sending an error event and "
                       "cutting the connection", refusal.message)
        body = refusal.openai_body()
        return (b"data: " + json.dumps(body, ensure_ascii=False).encode() + b"\n\n"
                + b"data: [DONE]\n\n")

    return last_words
