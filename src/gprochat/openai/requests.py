"""The OpenAI gateway's request and error bodies, as pydantic models (they make its OpenAPI).

Responses reuse ``gprochat.openai.types`` (``ChatCompletion``, ``ChatCompletionChunk``,
``Model``, ``SyncPage``), the same objects ``gprochat.Client`` returns.
Every field OpenAI's chat API defines that we know of is declared, so the schema says
what is accepted; unknown fields are refused with 400, as OpenAI refuses them.
"""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "RequestMessage",
    "StreamOptions",
    "ChatCompletionRequest",
    "ErrorDetail",
    "ErrorResponse",
]


class RequestMessage(BaseModel):
    """One message of the conversation; content is a string or a list of parts: text parts,
    and in user messages image parts (``{"type": "image_url", "image_url": {"url":
    "data:image/png;base64,..."}}``; the gateway checks them, ``server/gateway/images.py``)."""

    # strict: OpenAI answers 400 for "stream": "yes" or "max_tokens": "5"; so do we
    # (pydantic's lax mode would coerce them).
    model_config = ConfigDict(extra="allow", strict=True)

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: Union[str, list[dict[str, Any]], None] = None
    name: Optional[str] = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True)

    include_usage: bool = False
    include_obfuscation: Optional[bool] = None


# OpenAI takes up to four stop strings; each is matched against every piece of an answer
# as it is generated, so their number and length are bounded.
MAX_STOP = 4
MAX_STOP_CHARS = 256


class ChatCompletionRequest(BaseModel):
    """``POST /v1/chat/completions``.

    Honoured: ``model``, ``messages``, ``stream``, ``stream_options.include_usage``.
    Passed to the backend (which uses them when it can; a relay drops them):
    ``temperature``, ``max_tokens`` / ``max_completion_tokens``, ``stop``, ``top_p``, ``seed``.
    Accepted and ignored: penalties, ``user``, ``logit_bias`` and
    bookkeeping fields. Refused unless at their no-op value: ``n``, ``tools``,
    ``tool_choice``, ``functions``, ``function_call``, ``response_format``,
    ``logprobs``, ``top_logprobs``, ``audio``, ``modalities``, ``prediction``.
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    model: str = Field(description="A model id from GET /v1/models.")
    messages: list[RequestMessage] = Field(min_length=1)
    stream: Optional[bool] = False
    stream_options: Optional[StreamOptions] = None

    temperature: Optional[float] = Field(default=None, ge=0, le=2)
    max_tokens: Optional[int] = Field(default=None, ge=1)
    max_completion_tokens: Optional[int] = Field(default=None, ge=1)
    stop: Union[str, list[str], None] = Field(
        default=None, description=f"Up to {MAX_STOP} strings of at most {MAX_STOP_CHARS} characters."
    )

    top_p: Optional[float] = Field(default=None, ge=0, le=1)
    presence_penalty: Optional[float] = Field(default=None, ge=-2, le=2)
    frequency_penalty: Optional[float] = Field(default=None, ge=-2, le=2)
    seed: Optional[int] = None
    user: Optional[str] = None
    logit_bias: Optional[dict[str, float]] = None
    parallel_tool_calls: Optional[bool] = None
    metadata: Optional[dict[str, str]] = None
    store: Optional[bool] = None
    service_tier: Optional[str] = None
    reasoning_effort: Optional[str] = None
    safety_identifier: Optional[str] = None
    prompt_cache_key: Optional[str] = None
    verbosity: Optional[str] = None

    n: Optional[int] = Field(default=None, ge=1, description="Only 1 is supported.")
    tools: Optional[list[dict[str, Any]]] = Field(default=None, description="Not supported.")
    tool_choice: Union[str, dict[str, Any], None] = Field(
        default=None, description='Only "none" is supported.'
    )
    functions: Optional[list[dict[str, Any]]] = Field(default=None, description="Not supported.")
    function_call: Union[str, dict[str, Any], None] = Field(
        default=None, description='Only "none" is supported.'
    )
    response_format: Optional[dict[str, Any]] = Field(
        default=None, description='Only {"type": "text"} is supported.'
    )
    logprobs: Optional[bool] = Field(default=None, description="Only false is supported.")
    top_logprobs: Optional[int] = Field(default=None, description="Only 0 is supported.")
    audio: Optional[dict[str, Any]] = Field(default=None, description="Not supported.")
    modalities: Optional[list[str]] = Field(default=None, description='Only ["text"].')
    prediction: Optional[dict[str, Any]] = Field(default=None, description="Not supported.")
    web_search_options: Optional[dict[str, Any]] = Field(
        default=None, description="Not supported."
    )


    @field_validator("stop")
    @classmethod
    def _bounded_stop(cls, stop: Union[str, list[str], None]) -> Union[str, list[str], None]:
        strings = [stop] if isinstance(stop, str) else stop or []
        if len(strings) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop strings are accepted, got {len(strings)}")
        if any(len(text) > MAX_STOP_CHARS for text in strings):
            raise ValueError(f"each stop string may be at most {MAX_STOP_CHARS} characters long")
        return stop


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: Optional[str] = None
    code: Optional[str] = None


class ErrorResponse(BaseModel):
    """OpenAI's error shape: ``{"error": {"message", "type", "param", "code"}}``."""

    error: ErrorDetail
