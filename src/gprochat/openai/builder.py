"""Turn a stream of answer text into OpenAI's objects: one builder, used by both sides.

``Client``/``AsyncClient`` and the gateway build their ``ChatCompletion`` and
``ChatCompletionChunk`` objects here, so what our client returns and what the gateway
sends an OpenAI SDK are the same by construction. The builder sets exactly the fields
OpenAI's API sends, so ``wire_json`` writes them as OpenAI does::

    {"id":"chatcmpl-…","object":"chat.completion.chunk","created":1733230000,"model":"echo",
     "system_fingerprint":null,"choices":[{"index":0,"delta":{"content":"Hi!"},
     "logprobs":null,"finish_reason":null}]}

The first chunk's delta is ``{"role":"assistant","content":"","refusal":null}``, the
last one's ``{}`` with the finish reason; with ``include_usage`` every chunk says
``"usage":null`` and one more chunk, with no choices, carries the usage.

Streams are built per text chunk, so that path is kept cheap: ``chunk`` validates one
nested dict (one call into pydantic-core, not one per nested model), and
``ContentChunkJSON`` gives the gateway a content chunk's JSON bytes by splicing the
JSON-encoded text into bytes dumped once per answer from the model itself.

Usage, when the upstream reports none (GPROChat deployments never do), is an estimate,
not a tokenizer's count: ``ceil(characters / 4)`` per message content and for the
answer, OpenAI's rule of thumb for English text; such usage says ``"estimated": true``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, Optional, TypeVar

from pydantic_core import to_json

from .._streams import aclose, ready_texts
from .types import (
    ChatCompletion,
    ChatCompletionChunk,
    ChoiceDelta,
    CompletionUsage,
    FinishReason,
    wire_json,
)

__all__ = [
    "CompletionBuilder",
    "ContentChunkJSON",
    "estimate_tokens",
    "estimate_usage",
    "stream_chunks",
    "stream_chunk_json",
]

CHARS_PER_TOKEN = 4

T = TypeVar("T")

_validate_chunk = ChatCompletionChunk.__pydantic_validator__.validate_python
_validate_completion = ChatCompletion.__pydantic_validator__.validate_python


def estimate_tokens(text: str) -> int:
    """``ceil(len(text) / 4)``: about four characters per token."""
    return -(-len(text) // CHARS_PER_TOKEN)


def estimate_usage(messages: Sequence[Mapping[str, str]], answer: str) -> CompletionUsage:
    """Estimated usage for a conversation (its contents) and the answer."""
    return _usage(messages, len(answer))


def _usage(messages: Sequence[Mapping[str, str]], answer_chars: int) -> CompletionUsage:
    # By length: a stream counts its characters instead of keeping its text.
    prompt = sum(estimate_tokens(m.get("content", "")) for m in messages)
    completion = -(-answer_chars // CHARS_PER_TOKEN)
    # "estimated" is an extra field (kept by openai-python's model too): not the upstream's.
    return CompletionUsage.model_validate(
        {"prompt_tokens": prompt, "completion_tokens": completion,
         "total_tokens": prompt + completion, "estimated": True}
    )


class CompletionBuilder:
    """Objects for one answer: they share an ``id``, ``created`` time and ``model``.

    ``include_usage`` (``stream_options.include_usage``): every chunk has ``usage``
    set (None until the usage chunk), as OpenAI sends ``"usage":null`` then.
    """

    def __init__(
        self, model: str, *, completion_id: Optional[str] = None, include_usage: bool = False
    ) -> None:
        self.id = completion_id or f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model
        self.include_usage = include_usage

    def _head(self, kind: str) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model,
                "system_fingerprint": None}

    def chunk(
        self,
        delta: ChoiceDelta,
        finish_reason: Optional[FinishReason] = None,
    ) -> ChatCompletionChunk:
        return self._chunk(delta, finish_reason)

    def _chunk(
        self, delta: ChoiceDelta | dict[str, Optional[str]], finish_reason: Optional[FinishReason] = None
    ) -> ChatCompletionChunk:
        # One validation of nested dicts: the same objects (and fields set) as
        # ChatCompletionChunk(choices=[ChunkChoice(...)]), for less (docs/benchmarks.md, B5).
        data = self._head("chat.completion.chunk")
        data["choices"] = [
            {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        ]
        if self.include_usage:
            data["usage"] = None
        chunk: ChatCompletionChunk = _validate_chunk(data)
        return chunk

    def role_chunk(self) -> ChatCompletionChunk:
        """The first chunk: the role, empty content and no refusal (as OpenAI sends it)."""
        return self._chunk({"role": "assistant", "content": "", "refusal": None})

    def content_chunk(self, text: str) -> ChatCompletionChunk:
        return self._chunk({"content": text})

    def finish_chunk(self, finish_reason: FinishReason = "stop") -> ChatCompletionChunk:
        """The last chunk of the choice: an empty delta and the finish reason."""
        return self._chunk({}, finish_reason)

    def usage_chunk(self, usage: CompletionUsage) -> ChatCompletionChunk:
        """``stream_options.include_usage``: one more chunk with no choices."""
        chunk: ChatCompletionChunk = _validate_chunk(
            {**self._head("chat.completion.chunk"), "choices": [], "usage": usage}
        )
        return chunk

    def completion(
        self,
        text: str,
        usage: Optional[CompletionUsage] = None,
        finish_reason: FinishReason = "stop",
    ) -> ChatCompletion:
        data = self._head("chat.completion")
        message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None,
                                   "annotations": []}
        data["choices"] = [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}
        ]
        if usage is not None:
            data["usage"] = usage
        completion: ChatCompletion = _validate_completion(data)
        return completion


class ContentChunkJSON:
    """``wire_json(content_chunk(text))``, without building a model per chunk.

    Once per answer, a content chunk whose text is a sentinel is dumped by the model and
    split around the sentinel's JSON; per chunk only the text is JSON-encoded (by
    pydantic-core, the encoder ``model_dump_json`` uses) and spliced between the two
    halves. The model stays the one definition of the bytes: a field added to it shows
    up here too. ``prefix``/``suffix`` wrap every result (the gateway's SSE framing).
    """

    _SENTINEL = "\x00gprochat-content\x00"

    def __init__(self, builder: CompletionBuilder, *, prefix: bytes = b"", suffix: bytes = b"") -> None:
        whole = wire_json(builder.content_chunk(self._SENTINEL))
        marker = to_json(self._SENTINEL)
        head, found, tail = whole.partition(marker)
        self.head = prefix + head
        self.tail = tail + suffix
        self._builder, self._prefix, self._suffix = builder, prefix, suffix
        if not found or marker in tail:
            # The sentinel is in the id or model name too: no safe split, use the model.
            self.encode = self._dump  # type: ignore[method-assign]

    def encode(self, text: str) -> bytes:
        """``prefix + wire_json(content_chunk(text)) + suffix``."""
        return self.head + to_json(text) + self.tail

    def _dump(self, text: str) -> bytes:
        return self._prefix + wire_json(self._builder.content_chunk(text)) + self._suffix


async def _answer_chunks(
    builder: CompletionBuilder,
    texts: AsyncIterator[str],
    messages: Optional[Sequence[Mapping[str, str]]],
    first: str,
    content: Callable[[str], T],
    encode: Callable[[ChatCompletionChunk], T],
    reported_usage: Optional[Callable[[], Optional[CompletionUsage]]] = None,
    last: Optional[T] = None,
    reported_finish: Optional[Callable[[], Optional[FinishReason]]] = None,
) -> AsyncIterator[T]:
    # The one sequence of an answer's chunks, whatever form they take.
    chars = len(first)
    try:
        yield encode(builder.role_chunk())
        if first:
            yield content(first)
        async for text in texts:
            if text:
                chars += len(text)
                yield content(text)
        finish = reported_finish() if reported_finish is not None else None
        yield encode(builder.finish_chunk(finish or "stop"))
        if messages is not None:
            usage = reported_usage() if reported_usage is not None else None
            yield encode(builder.usage_chunk(usage or _usage(messages, chars)))
        if last is not None:
            yield last
    finally:
        await aclose(texts)


def _same(chunk: ChatCompletionChunk) -> ChatCompletionChunk:
    return chunk


def stream_chunks(
    builder: CompletionBuilder,
    texts: AsyncIterator[str],
    *,
    messages: Optional[Sequence[Mapping[str, str]]] = None,
    first: str = "",
) -> AsyncIterator[ChatCompletionChunk]:
    """The chunks for an answer arriving as ``texts`` (after ``first``, if it was read already).

    A role chunk, one content chunk per non-empty text, a ``finish_reason="stop"``
    chunk, and, when ``messages`` is given (``include_usage``), a usage chunk. An error
    from ``texts`` propagates: no finish chunk is made for a cut answer. ``texts`` is
    closed whatever happens, once the chunks were started.
    """
    return _answer_chunks(builder, texts, messages, first, builder.content_chunk, _same)


def stream_chunk_json(
    builder: CompletionBuilder,
    texts: AsyncIterator[str],
    *,
    messages: Optional[Sequence[Mapping[str, str]]] = None,
    first: str = "",
    prefix: bytes = b"",
    suffix: bytes = b"",
    reported_usage: Optional[Callable[[], Optional[CompletionUsage]]] = None,
    end: bytes = b"",
    join_ready: bool = False,
    reported_finish: Optional[Callable[[], Optional[FinishReason]]] = None,
) -> AsyncIterator[bytes]:
    """``stream_chunks``, each chunk as ``prefix + wire_json(chunk) + suffix`` bytes.

    Byte for byte what ``wire_json`` of ``stream_chunks``' models gives; content chunks come from
    a ``ContentChunkJSON`` template, the few others from their models. With
    ``messages``, the usage chunk carries ``reported_usage()`` (the upstream's figures,
    read once the answer has ended) or, when that is None, the estimate; the finish
    chunk says ``reported_finish()`` (``"length"`` for an answer cut by its token limit),
    ``"stop"`` when that is None. ``end`` follows the last chunk (the gateway's
    ``data: [DONE]``), not after a failure.

    With ``join_ready`` (the gateway), texts ready at the same instant make one content
    chunk whose delta is their concatenation (``ready_texts``: a text that is ready is
    never held for a later one); the answer's text and usage are the same.
    """

    def encode(chunk: ChatCompletionChunk) -> bytes:
        return prefix + wire_json(chunk) + suffix

    content = ContentChunkJSON(builder, prefix=prefix, suffix=suffix).encode
    if join_ready:
        texts, first = ready_texts(texts, first), ""
    return _answer_chunks(
        builder, texts, messages, first, content, encode, reported_usage, end or None,
        reported_finish,
    )
