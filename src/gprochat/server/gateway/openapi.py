"""The gateway's OpenAPI 3.1 document, generated from the pydantic models it answers with.

``/openapi.json`` serves it. The three ``/v1`` routes only: the GeminiProChat routes
stay out of it. It depends on the code alone (no setting changes it), so it is
generated on the first request for it and kept, rendered, for the life of the process
(``openapi_json()``): an app that is never asked for it never generates it.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from pydantic.json_schema import models_json_schema

from ... import __version__
from ...openai.requests import ChatCompletionRequest, ErrorResponse
from ...openai.types import ChatCompletion, ChatCompletionChunk, Model, SyncPage

__all__ = ["openapi_json", "openapi_schema"]


@cache
def openapi_json() -> bytes:
    """``openapi_schema()`` as JSON (as Starlette's ``JSONResponse`` renders it), generated
    on the first call and kept for the process."""
    return json.dumps(openapi_schema(), ensure_ascii=False, allow_nan=False,
                      separators=(",", ":")).encode()


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
