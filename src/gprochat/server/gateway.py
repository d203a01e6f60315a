"""The OpenAI-compatible gateway: ``/v1/models`` and ``/v1/chat/completions``.

Point any OpenAI client at ``http://HOST:PORT/v1``. Answers come from the server's
backend, or from a relayed GeminiProChat deployment (see ``gateway_upstream``).
A streamed answer is server-sent events, ``data: {chat.completion.chunk}`` lines ending
``data: [DONE]``. When the upstream fails after the stream started, a last
``data: {"error": {...}}`` event and ``data: [DONE]`` are sent, then the connection is
cut (no chunked terminator), so no client can take the answer for a complete one.

``install_gateway(app)`` mounts it; the app's config must be on ``app.state.config``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, Optional

from fastapi import APIRouter, FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPBearer
from pydantic.json_schema import models_json_schema

from .. import protocol
from .._streams import aclose, first_text
from ..errors import InvalidParameterError
from ..openai.builder import CompletionBuilder, estimate_usage, stream_chunk_json
from ..openai.params import check_parameters, normalize_messages
from ..openai.requests import ChatCompletionRequest, ErrorResponse
from ..openai.types import ChatCompletion, ChatCompletionChunk, Model, SyncPage
from .gateway_errors import GatewayError, from_rejection, from_upstream_error, from_validation_error
from .gateway_upstream import Upstream, create_upstream
from .guard import Rejected, RequestGuard
from .routes import STREAM_HEADERS, StreamAborted
from .streaming import ChunkStream, encode_headers

__all__ = ["router", "install_gateway"]

logger = logging.getLogger("gprochat.server.gateway")

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Invalid request; `param` names the field."},
    401: {"model": ErrorResponse, "description": "Missing or wrong API key."},
    404: {"model": ErrorResponse, "description": "Unknown model."},
    429: {"model": ErrorResponse, "description": "Rate limited; see `Retry-After`."},
    502: {"model": ErrorResponse, "description": "The upstream failed."},
}


class _OpenAIRoute(APIRoute):
    """Checks the API key first, and answers every error in OpenAI's shape.

    FastAPI's 422 for a body that does not validate becomes OpenAI's 400, for these
    routes only; the GeminiProChat routes keep their own error bodies.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                _check_api_key(request)
                guard: RequestGuard = request.app.state.guard
                guard.check_declared_size(request)
                await guard.rate_limiter.check(request, scope="gateway")
                return await handler(request)
            except RequestValidationError as exc:
                return from_validation_error(exc).response()
            except GatewayError as exc:
                return exc.response()
            except Rejected as exc:
                return from_rejection(exc.status, exc.message, exc.headers).response()

        return route


# Documents the scheme in OpenAPI; the check itself is ``_check_api_key``.
_bearer = HTTPBearer(auto_error=False, description="One of the gateway's API keys, if any.")

_SSE_HEADERS = encode_headers("text/event-stream; charset=utf-8", STREAM_HEADERS)

router = APIRouter(
    prefix="/v1",
    tags=["OpenAI-compatible"],
    route_class=_OpenAIRoute,
    dependencies=[Security(_bearer)],
    responses=_ERRORS,
)


def _check_api_key(request: Request) -> None:
    keys = request.app.state.config.api_keys
    if not keys:
        return
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise GatewayError(
            401, "Missing API key: send it as 'Authorization: Bearer YOUR_KEY' "
            "(with the OpenAI SDK: api_key=...)", code="invalid_api_key"
        )
    if not protocol.password_matches(key.strip(), keys):
        raise GatewayError(
            401, "Incorrect API key provided: it is not one of this gateway's keys "
            "(--api-key / GPROCHAT_API_KEYS)", code="invalid_api_key"
        )


def _upstream(request: Request) -> Upstream:
    state = request.app.state
    upstream: Optional[Upstream] = getattr(state, "gateway_upstream", None)
    if upstream is None:
        upstream = state.gateway_upstream = create_upstream(state.config, state.backend)
    return upstream


def _model(name: str) -> Model:
    return Model(id=name, created=0, owned_by="gprochat")


@router.get("/models", response_model=SyncPage[Model], summary="List models")
async def list_models(request: Request) -> JSONResponse:
    page = SyncPage[Model](data=[_model(name) for name in _upstream(request).models()])
    return JSONResponse(page.model_dump(mode="json"))


@router.get("/models/{model_id:path}", response_model=Model, summary="Retrieve a model")
async def retrieve_model(model_id: str, request: Request) -> JSONResponse:
    return JSONResponse(_model(_upstream(request).resolve(model_id)).model_dump(mode="json"))


@router.post(
    "/chat/completions",
    response_model=ChatCompletion,
    summary="Create a chat completion",
    responses={
        200: {
            "description": "`stream: false`: one `chat.completion` (JSON). `stream: true`: "
            "server-sent events, each `data: {chat.completion.chunk}`, then `data: [DONE]`.",
            "content": {
                "text/event-stream": {
                    "schema": {"$ref": "#/components/schemas/ChatCompletionChunk"}
                }
            },
        }
    },
)
async def create_chat_completion(body: ChatCompletionRequest, request: Request) -> Response:
    try:
        check_parameters(body.model_dump(exclude_unset=True))
        messages = normalize_messages(
            [m.model_dump(exclude_none=True) for m in body.messages]
        )
    except InvalidParameterError as exc:
        raise GatewayError(400, exc.message, param=exc.param) from exc
    upstream = _upstream(request)
    model = upstream.resolve(body.model)
    guard: RequestGuard = request.app.state.guard
    release = guard.streams.try_acquire()
    builder = CompletionBuilder(model)
    # Wait for the first text before answering, so an upstream that fails at once
    # gets a proper error status instead of a 200 with an error inside.
    opened: AsyncIterator[str] | None = None
    try:
        opened = upstream.stream(model, messages, body).__aiter__()
        first = await first_text(opened)
    except BaseException as exc:
        release()
        if opened is not None:
            await aclose(opened)
        if not isinstance(exc, Exception):
            raise
        raise from_upstream_error(exc, relay=upstream.relay) from exc
    texts = opened

    if not body.stream:
        parts = [first]
        try:
            parts += [text async for text in texts]
        except Exception as exc:
            raise from_upstream_error(exc, relay=upstream.relay) from exc
        finally:
            release()
            await aclose(texts)
        answer = "".join(parts)
        completion = builder.completion(answer, estimate_usage(messages, answer))
        return JSONResponse(completion.model_dump(mode="json"))

    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    # Each chunk arrives already framed as an event: one generator between the
    # upstream and the response besides the error handling (this path runs per chunk).
    events = stream_chunk_json(
        builder,
        texts,
        first=first,
        messages=messages if include_usage else None,
        prefix=b"data: ",
        suffix=b"\n\n",
    )

    async def on_close() -> None:
        release()
        await aclose(events)
        # Also when the response never started the generators (their finally never ran).
        await aclose(texts)

    return ChunkStream(
        _server_sent_events(events, relay=upstream.relay), on_close=on_close, raw_headers=_SSE_HEADERS
    )


async def _server_sent_events(events: AsyncIterator[bytes], *, relay: bool) -> AsyncIterator[bytes]:
    """``events`` then ``data: [DONE]``; an upstream failure becomes an error event and a cut."""
    try:
        async for event in events:
            yield event
    except Exception as exc:
        error = from_upstream_error(exc, relay=relay)
        logger.warning("upstream failed mid-stream (%s); sending an error event and "
                       "cutting the connection", error.message)
        yield b"data: " + json.dumps(error.body(), ensure_ascii=False).encode() + b"\n\n"
        yield b"data: [DONE]\n\n"
        # Cut the connection (no chunked terminator): the answer is not complete.
        raise StreamAborted(error.message) from exc
    finally:
        await aclose(events)
    yield b"data: [DONE]\n\n"


def install_gateway(app: FastAPI) -> None:
    """Mount the gateway on ``app`` unless ``app.state.config.gateway`` is false."""
    if not app.state.config.gateway:
        return
    app.include_router(router)
    build_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        schema = build_openapi()
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        if "ChatCompletionChunk" not in schemas:
            # The SSE response refers to the chunk model, which no route returns as JSON.
            _, extra = models_json_schema(
                [(ChatCompletionChunk, "serialization")],
                ref_template="#/components/schemas/{model}",
            )
            schemas.update(extra.get("$defs", {}))
        for path, operations in schema.get("paths", {}).items():
            if path.startswith(router.prefix + "/"):
                for operation in operations.values():
                    # These routes answer validation failures with 400 (OpenAI's shape).
                    operation.get("responses", {}).pop("422", None)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
