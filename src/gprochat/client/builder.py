"""Turn a stream of answer text into OpenAI's objects: one builder, used by both sides.

``Client``/``AsyncClient`` and the gateway build their ``ChatCompletion`` and
``ChatCompletionChunk`` objects here, so what our client returns and what the gateway
sends an OpenAI SDK are the same by construction.

Usage is an estimate, not a tokenizer's count: ``ceil(characters / 4)`` per message
content and for the answer, OpenAI's rule of thumb for English text. GPROChat
deployments report no token counts.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Optional

from .types import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionMessage,
    Choice,
    ChoiceDelta,
    ChunkChoice,
    CompletionUsage,
    FinishReason,
)

__all__ = ["CompletionBuilder", "estimate_tokens", "estimate_usage", "stream_chunks"]

CHARS_PER_TOKEN = 4


def estimate_tokens(text: str) -> int:
    """``ceil(len(text) / 4)``: about four characters per token."""
    return -(-len(text) // CHARS_PER_TOKEN)


def estimate_usage(messages: Sequence[Mapping[str, str]], answer: str) -> CompletionUsage:
    """Estimated usage for a conversation (its contents) and the answer."""
    prompt = sum(estimate_tokens(m.get("content", "")) for m in messages)
    completion = estimate_tokens(answer)
    return CompletionUsage(
        prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
    )


class CompletionBuilder:
    """Objects for one answer: they share an ``id``, ``created`` time and ``model``."""

    def __init__(self, model: str, *, completion_id: Optional[str] = None) -> None:
        self.id = completion_id or f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model

    def chunk(
        self,
        delta: ChoiceDelta,
        finish_reason: Optional[FinishReason] = None,
    ) -> ChatCompletionChunk:
        return ChatCompletionChunk(
            id=self.id,
            created=self.created,
            model=self.model,
            choices=[ChunkChoice(index=0, delta=delta, finish_reason=finish_reason)],
        )

    def role_chunk(self) -> ChatCompletionChunk:
        """The first chunk: the role, and empty content (as OpenAI sends it)."""
        return self.chunk(ChoiceDelta(role="assistant", content=""))

    def content_chunk(self, text: str) -> ChatCompletionChunk:
        return self.chunk(ChoiceDelta(content=text))

    def finish_chunk(self, finish_reason: FinishReason = "stop") -> ChatCompletionChunk:
        """The last chunk of the choice: an empty delta and the finish reason."""
        return self.chunk(ChoiceDelta(), finish_reason)

    def usage_chunk(self, usage: CompletionUsage) -> ChatCompletionChunk:
        """``stream_options.include_usage``: one more chunk with no choices."""
        return ChatCompletionChunk(
            id=self.id, created=self.created, model=self.model, choices=[], usage=usage
        )

    def completion(
        self, text: str, usage: Optional[CompletionUsage] = None
    ) -> ChatCompletion:
        return ChatCompletion(
            id=self.id,
            created=self.created,
            model=self.model,
            choices=[
                Choice(
                    index=0,
                    finish_reason="stop",
                    message=ChatCompletionMessage(role="assistant", content=text),
                )
            ],
            usage=usage,
        )


async def stream_chunks(
    builder: CompletionBuilder,
    texts: AsyncIterator[str],
    *,
    messages: Optional[Sequence[Mapping[str, str]]] = None,
) -> AsyncIterator[ChatCompletionChunk]:
    """The chunks for an answer arriving as ``texts``.

    A role chunk, one content chunk per non-empty text, a ``finish_reason="stop"``
    chunk, and, when ``messages`` is given (``include_usage``), a usage chunk. An error
    from ``texts`` propagates: no finish chunk is made for a cut answer. ``texts`` is
    closed whatever happens.
    """
    received: list[str] = []
    try:
        yield builder.role_chunk()
        async for text in texts:
            if text:
                received.append(text)
                yield builder.content_chunk(text)
        yield builder.finish_chunk()
        if messages is not None:
            yield builder.usage_chunk(estimate_usage(messages, "".join(received)))
    finally:
        aclose = getattr(texts, "aclose", None)
        if aclose is not None:
            await aclose()
