"""Response objects named and shaped like openai-python's.

Field names, nesting and literal values follow ``openai.types.chat`` so code written
for the OpenAI SDK reads ours unchanged (``completion.choices[0].message.content``,
``chunk.choices[0].delta.content``). Fields GPROChat never fills (tool calls, log
probabilities, refusals) exist and are ``None``, as the SDK's are for a plain answer.

Fields are declared in the order OpenAI's API writes them, and ``gprochat.openai.builder``
sets only those the API sends (``logprobs: null`` yes, ``audio: null`` no): ``wire_json``
(the fields set, as openai-python's ``to_json`` writes an object read from the API) is
then what OpenAI sends, with no ``null`` padding. The gateway answers with it and builds
its OpenAPI schema from the same models.
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
    "wire_json",
]

FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "function_call"]

T = TypeVar("T")


def wire_json(obj: BaseModel) -> bytes:
    """``obj`` as the API sends it: the fields that were set (given or read), compact JSON."""
    return obj.__pydantic_serializer__.to_json(obj, exclude_unset=True)


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

        Every field is included by default; ``exclude_unset=True`` (the SDK's default)
        gives only the fields the API sends, as ``wire_json`` does.
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

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    completion_tokens_details: Optional[Any] = None
    prompt_tokens_details: Optional[Any] = None


class ChatCompletionMessage(_OpenAIObject):
    """The assistant's message in a non-streamed answer."""

    role: Literal["assistant"] = "assistant"
    content: Optional[str] = None
    refusal: Optional[str] = None
    annotations: Optional[list[Any]] = None
    audio: Optional[Any] = None
    function_call: Optional[Any] = None
    tool_calls: Optional[list[Any]] = None


class Choice(_OpenAIObject):
    """One answer of a ``ChatCompletion`` (gprochat always gives exactly one)."""

    index: int
    message: ChatCompletionMessage
    logprobs: Optional[Any] = None
    finish_reason: FinishReason


class ChatCompletion(_OpenAIObject):
    """A whole answer: ``object == "chat.completion"``."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Optional[CompletionUsage] = None
    service_tier: Optional[str] = None
    system_fingerprint: Optional[str] = None
    metadata: Optional[dict[str, str]] = None
    moderation: Optional[Any] = None


class ChoiceDelta(_OpenAIObject):
    """What one chunk adds: the role (first chunk) or some content."""

    role: Optional[Literal["developer", "system", "user", "assistant", "tool"]] = None
    content: Optional[str] = None
    refusal: Optional[str] = None
    function_call: Optional[Any] = None
    tool_calls: Optional[list[Any]] = None
    audio: Optional[Any] = None


class ChunkChoice(_OpenAIObject):
    """``openai.types.chat.chat_completion_chunk.Choice``."""

    index: int
    delta: ChoiceDelta
    logprobs: Optional[Any] = None
    finish_reason: Optional[FinishReason] = None


class ChatCompletionChunk(_OpenAIObject):
    """One server-sent event of a streamed answer: ``object == "chat.completion.chunk"``.

    The last chunk has ``finish_reason="stop"``; with ``stream_options={"include_usage":
    True}`` one more follows, with no choices and the ``usage``.
    """

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    system_fingerprint: Optional[str] = None
    choices: list[ChunkChoice]
    usage: Optional[CompletionUsage] = None
    service_tier: Optional[str] = None
    moderation: Optional[Any] = None
    obfuscation: Optional[str] = None


class Model(_OpenAIObject):
    """A model name the client or gateway answers to."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    shutdown_date: Optional[str] = None


class SyncPage(_OpenAIObject, Generic[T]):
    """A list response (``object == "list"``): iterate it, or read ``.data``."""

    object: Literal["list"] = "list"
    data: list[T]

    def __iter__(self) -> Iterator[T]:  # type: ignore[override]
        # openai-python's pages iterate their items, not their fields.
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)
