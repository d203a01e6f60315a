"""Response objects named and shaped like openai-python's.

Field names, nesting and literal values follow ``openai.types.chat`` so code written
for the OpenAI SDK reads ours unchanged (``completion.choices[0].message.content``,
``chunk.choices[0].delta.content``). Fields GPROChat never fills (tool calls, log
probabilities, refusals) exist and are ``None``, as the SDK's are for a plain answer.
The gateway uses the same models for its JSON and its OpenAPI schema.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Generic, Literal, Optional, TypeVar

from pydantic import BaseModel, ConfigDict

__all__ = [
    "CompletionUsage",
    "ChatCompletionMessage",
    "Choice",
    "ChatCompletion",
    "ChoiceDelta",
    "ChunkChoice",
    "ChatCompletionChunk",
    "Model",
    "SyncPage",
    "FinishReason",
]

FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "function_call"]

T = TypeVar("T")


class _OpenAIObject(BaseModel):
    # Unknown fields are kept, as openai-python's models keep them.
    model_config = ConfigDict(extra="allow")

    def to_dict(
        self,
        *,
        mode: Literal["json", "python"] = "python",
        use_api_names: bool = True,
        exclude_unset: bool = False,
        exclude_defaults: bool = False,
        exclude_none: bool = False,
        warnings: bool = True,
    ) -> dict[str, object]:
        """The object as a dict, with openai-python's ``to_dict`` arguments.

        Every field is included by default: the SDK's default ``exclude_unset=True``
        gives the same for an object parsed from the API's JSON, where every field is set.
        """
        return self.model_dump(
            mode=mode, by_alias=use_api_names, exclude_unset=exclude_unset,
            exclude_defaults=exclude_defaults, exclude_none=exclude_none, warnings=warnings,
        )

    def to_json(
        self,
        *,
        indent: Optional[int] = 2,
        use_api_names: bool = True,
        exclude_unset: bool = False,
        exclude_defaults: bool = False,
        exclude_none: bool = False,
        warnings: bool = True,
    ) -> str:
        """The object as JSON text (``indent=None`` for one line), as openai-python's ``to_json``."""
        return self.model_dump_json(
            indent=indent, by_alias=use_api_names, exclude_unset=exclude_unset,
            exclude_defaults=exclude_defaults, exclude_none=exclude_none, warnings=warnings,
        )


class CompletionUsage(_OpenAIObject):
    """Token counts: the upstream's own, or gprochat's estimate (about four characters per
    token), which then also carries ``estimated=True``."""

    completion_tokens: int
    prompt_tokens: int
    total_tokens: int
    completion_tokens_details: Optional[Any] = None
    prompt_tokens_details: Optional[Any] = None


class ChatCompletionMessage(_OpenAIObject):
    """The assistant's message in a non-streamed answer."""

    content: Optional[str] = None
    refusal: Optional[str] = None
    role: Literal["assistant"] = "assistant"
    annotations: Optional[list[Any]] = None
    audio: Optional[Any] = None
    function_call: Optional[Any] = None
    tool_calls: Optional[list[Any]] = None


class Choice(_OpenAIObject):
    """One answer of a ``ChatCompletion`` (gprochat always gives exactly one)."""

    finish_reason: FinishReason
    index: int
    logprobs: Optional[Any] = None
    message: ChatCompletionMessage


class ChatCompletion(_OpenAIObject):
    """A whole answer: ``object == "chat.completion"``."""

    id: str
    choices: list[Choice]
    created: int
    model: str
    object: Literal["chat.completion"] = "chat.completion"
    metadata: Optional[dict[str, str]] = None
    moderation: Optional[Any] = None
    service_tier: Optional[str] = None
    system_fingerprint: Optional[str] = None
    usage: Optional[CompletionUsage] = None


class ChoiceDelta(_OpenAIObject):
    """What one chunk adds: the role (first chunk) or some content."""

    audio: Optional[Any] = None
    content: Optional[str] = None
    function_call: Optional[Any] = None
    refusal: Optional[str] = None
    role: Optional[Literal["developer", "system", "user", "assistant", "tool"]] = None
    tool_calls: Optional[list[Any]] = None


class ChunkChoice(_OpenAIObject):
    """``openai.types.chat.chat_completion_chunk.Choice``."""

    delta: ChoiceDelta
    finish_reason: Optional[FinishReason] = None
    index: int
    logprobs: Optional[Any] = None


class ChatCompletionChunk(_OpenAIObject):
    """One server-sent event of a streamed answer: ``object == "chat.completion.chunk"``.

    The last chunk has ``finish_reason="stop"``; with ``stream_options={"include_usage":
    True}`` one more follows, with no choices and the ``usage``.
    """

    id: str
    choices: list[ChunkChoice]
    created: int
    model: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    moderation: Optional[Any] = None
    obfuscation: Optional[str] = None
    service_tier: Optional[str] = None
    system_fingerprint: Optional[str] = None
    usage: Optional[CompletionUsage] = None


class Model(_OpenAIObject):
    """A model name the client or gateway answers to."""

    id: str
    created: int
    object: Literal["model"] = "model"
    owned_by: str
    shutdown_date: Optional[str] = None


class SyncPage(_OpenAIObject, Generic[T]):
    """A list response (``object == "list"``): iterate it, or read ``.data``."""

    data: list[T]
    object: Literal["list"] = "list"

    def __iter__(self) -> Iterator[T]:  # type: ignore[override]
        # openai-python's pages iterate their items, not their fields.
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)
