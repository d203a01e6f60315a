"""The OpenAI-compatible gateway: ``/v1/models`` and ``/v1/chat/completions``.

Point any OpenAI client at ``http://HOST:PORT/v1``. Answers come from the server's
backend, or from a relayed GeminiProChat deployment (see ``gateway_upstream``).
A streamed answer is server-sent events, ``data: {chat.completion.chunk}`` lines ending
``data: [DONE]``. When the upstream fails after the stream started, a last
``data: {"error": {...}}`` event and ``data: [DONE]`` are sent, then the connection is
cut (no chunked terminator), so no client can take the answer for a complete one.

Requests pass the same guard as ``/api/generate`` (``guard.RequestGuard``): size,
the gateway's own rate budget, an API key or the site password as a bearer token
when the site has either, the conversation limits, a stream slot.

Usage: when the backend reports the upstream's own figures (the openai backend asks
for them), they are passed on with the upstream's completion id; otherwise they are
estimated (``gprochat.openai.builder.estimate_usage``) and marked ``"estimated": true``.

``gateway_routes()`` lists the routes; ``openapi_schema()`` describes them.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from collections.abc import Callable
from typing import Any, Optional

from pydantic import ValidationError
from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from .. import __version__, protocol
from ..errors import InvalidParameterError
from ..openai.builder import CompletionBuilder, estimate_usage, stream_chunk_json
from ..openai.params import check_parameters, normalize_messages
from ..openai.requests import ChatCompletionRequest, ErrorResponse
from ..openai.types import ChatCompletion, ChatCompletionChunk, CompletionUsage, Model, SyncPage
from .backends import AnswerReport, Backend
from .config import ServerConfig
from .failures import Failure, backend_failure
from .front import openai_error_body, route
from .gateway_errors import GatewayError, failure_response, from_failure, from_validation_error
from .gateway_upstream import Upstream, create_upstream
from .guard import RequestGuard
from .metrics import ServerMetrics
from .routes import STREAM_HEADERS
from .streaming import AnswerFailed, ChunkStream, encode_headers, open_answer

__all__ = ["gateway_routes", "gateway_warning", "openapi_schema"]

logger = logging.getLogger("gprochat.server.gateway")

_SSE_HEADERS = encode_headers("text/event-stream; charset=utf-8", STREAM_HEADERS)


def gateway_warning(config: ServerConfig, host: str) -> Optional[str]:
    """The start-up warning for an open gateway on an address others can reach, or None.

    Open: the gateway is on, with no ``--api-key`` and no site password.
    """
    if not config.gateway or config.api_keys or config.passwords or _is_loopback(host):
        return None
    return (
        f"Warning: the OpenAI gateway (/v1) on {host} is open to anyone who can reach it, "
        "and every request spends the backend's quota. Lock it with --api-key KEY (or a site "
        "--password, which it then also takes as a key), or serve with --no-gateway."
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _upstream(request: Request) -> Upstream:
    state = request.app.state
    upstream: Optional[Upstream] = getattr(state, "gateway_upstream", None)
    if upstream is None:
        upstream = state.gateway_upstream = create_upstream(state.config, state.backend)
    return upstream


def _model(name: str) -> Model:
    return Model(id=name, created=0, owned_by="gprochat")


async def _admit_without_body(request: Request) -> None:
    guard: RequestGuard = request.app.state.guard
    await guard.admit(request, "gateway", bearer=True)


async def list_models(request: Request) -> Response:
    await _admit_without_body(request)
    page = SyncPage[Model](data=[_model(name) for name in _upstream(request).models()])
    return JSONResponse(page.model_dump(mode="json"))


async def retrieve_model(request: Request) -> Response:
    await _admit_without_body(request)
    model_id = request.path_params["model_id"]
    return JSONResponse(_model(_upstream(request).resolve(model_id)).model_dump(mode="json"))


def parse_request(body: bytes, content_type: Optional[str] = None) -> ChatCompletionRequest:
    """The request, or ``GatewayError(400)`` naming what is wrong."""
    media_type = (content_type or "application/json").partition(";")[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise GatewayError(
            400, f"Content-Type {media_type!r} is not JSON: send the body as application/json "
            "(a JSON object with model and messages)."
        )
    if not body.strip():
        raise GatewayError(400, "Empty request body: send a JSON object with model and messages.")
    try:
        data = protocol.parse_json(body)
    except protocol.InvalidRequest as exc:
        raise GatewayError(400, exc.message) from exc
    try:
        return ChatCompletionRequest.model_validate(data)
    except ValidationError as exc:
        raise from_validation_error(exc) from exc


async def create_chat_completion(request: Request) -> Response:
    state = request.app.state
    guard: RequestGuard = state.guard
    body = parse_request(await guard.admit(request, "gateway", bearer=True),
                         request.headers.get("content-type"))
    try:
        check_parameters(body.model_dump(exclude_unset=True))
        messages = normalize_messages([m.model_dump(exclude_none=True) for m in body.messages])
    except InvalidParameterError as exc:
        raise GatewayError(400, exc.message, param=exc.param) from exc
    guard.check_conversation([m["content"] for m in messages], where="messages[{index}]")
    upstream = _upstream(request)
    model = upstream.resolve(body.model)
    release = guard.streams.try_acquire()
    report = AnswerReport()
    metrics: ServerMetrics = state.metrics
    backend: Backend = state.backend
    try:
        answer = await open_answer(
            lambda: upstream.stream(model, messages, body, report),
            release,
            backend="relay" if upstream.relay else backend.name,
            metrics=metrics,
        )
    except AnswerFailed as exc:
        return failure_response(exc.failure)
    # The upstream's own id when it gave one (it has, by its first text).
    builder = CompletionBuilder(model, completion_id=report.id)

    if not body.stream:
        try:
            parts = [answer.first]
            parts += [text async for text in answer.rest]
        except Exception as exc:
            return failure_response(_failure(exc, upstream, backend))
        finally:
            await answer.close()
        text = "".join(parts)
        completion = builder.completion(
            text, _usage(report, messages, text), report.finish_reason or "stop"
        )
        return JSONResponse(completion.model_dump(mode="json"))

    include_usage = bool(body.stream_options and body.stream_options.include_usage)
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
        on_failure=_error_event(upstream, backend),
    )


def _failure(exc: Exception, upstream: Upstream, backend: Backend) -> Failure:
    return backend_failure(exc, "relay" if upstream.relay else backend.name)


def _reported_usage(report: AnswerReport) -> Optional[CompletionUsage]:
    if report.usage is None:
        return None
    return CompletionUsage.model_validate(report.usage)


def _usage(report: AnswerReport, messages: list[dict[str, str]], text: str) -> CompletionUsage:
    reported = _reported_usage(report)
    if reported is not None:
        return reported
    return estimate_usage(messages, text)


def _error_event(upstream: Upstream, backend: Backend) -> Callable[[Exception], bytes]:
    """An upstream failure mid-stream: a last error event and ``data: [DONE]`` (then the cut)."""

    def last_words(exc: Exception) -> bytes:
        error = from_failure(_failure(exc, upstream, backend))
        logger.warning("upstream failed mid-stream (%s); sending an error event and "
                       "cutting the connection", error.message)
        body = openai_error_body(error.status, error.message, type=error.type,
                                 param=error.param, code=error.code)
        return (b"data: " + json.dumps(body, ensure_ascii=False).encode() + b"\n\n"
                + b"data: [DONE]\n\n")

    return last_words


def gateway_routes() -> list[BaseRoute]:
    """The gateway's routes, for the app's one router."""
    return [
        route("/v1/models", list_models, ["GET"]),
        route("/v1/models/{model_id:path}", retrieve_model, ["GET"]),
        route("/v1/chat/completions", create_chat_completion, ["POST"]),
    ]


def openapi_schema() -> dict[str, Any]:
    """The gateway's OpenAPI 3.1 document, generated from the pydantic models it uses."""
    refs, defs = models_json_schema(
        [
            (ChatCompletionRequest, "validation"),
            (ChatCompletion, "serialization"),
            (ChatCompletionChunk, "serialization"),
            (Model, "serialization"),
            (SyncPage[Model], "serialization"),
            (ErrorResponse, "serialization"),
        ],
        ref_template="#/components/schemas/{model}",
    )

    def ref(model: Any, mode: str = "serialization") -> dict[str, Any]:
        return dict(refs[(model, mode)])  # type: ignore[index]

    def json_content(schema: dict[str, Any]) -> dict[str, Any]:
        return {"application/json": {"schema": schema}}

    errors = {
        str(status): {"description": text, "content": json_content(ref(ErrorResponse))}
        for status, text in (
            (400, "Invalid request; `param` names the field."),
            (401, "Missing or wrong API key (or site password)."),
            (404, "Unknown model."),
            (413, "Request or conversation too large."),
            (429, "Rate limited; see `Retry-After`."),
            (502, "The upstream failed."),
            (503, "Too many answers streaming; see `Retry-After`."),
        )
    }
    security: list[dict[str, list[str]]] = [{"bearer": []}]
    return {
        "openapi": "3.1.0",
        "info": {"title": "gprochat", "version": __version__},
        "paths": {
            "/v1/models": {
                "get": {
                    "summary": "List models",
                    "operationId": "list_models",
                    "tags": ["OpenAI-compatible"],
                    "security": security,
                    "responses": {
                        "200": {"description": "The models.",
                                "content": json_content(ref(SyncPage[Model]))},
                        **errors,
                    },
                }
            },
            "/v1/models/{model_id}": {
                "get": {
                    "summary": "Retrieve a model",
                    "operationId": "retrieve_model",
                    "tags": ["OpenAI-compatible"],
                    "security": security,
                    "parameters": [{"name": "model_id", "in": "path", "required": True,
                                    "schema": {"type": "string"}}],
                    "responses": {
                        "200": {"description": "The model.", "content": json_content(ref(Model))},
                        **errors,
                    },
                }
            },
            "/v1/chat/completions": {
                "post": {
                    "summary": "Create a chat completion",
                    "operationId": "create_chat_completion",
                    "tags": ["OpenAI-compatible"],
                    "security": security,
                    "requestBody": {
                        "required": True,
                        "content": json_content(ref(ChatCompletionRequest, "validation")),
                    },
                    "responses": {
                        "200": {
                            "description": "`stream: false`: one `chat.completion` (JSON). "
                            "`stream: true`: server-sent events, each `data: "
                            "{chat.completion.chunk}`, then `data: [DONE]`.",
                            "content": {
                                **json_content(ref(ChatCompletion)),
                                "text/event-stream": {"schema": ref(ChatCompletionChunk)},
                            },
                        },
                        **errors,
                    },
                }
            },
        },
        "components": {
            "schemas": defs.get("$defs", {}),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "One of the gateway's API keys, or the site password.",
                }
            },
        },
    }
