"""The builder's fast paths give exactly what the pydantic models give.

``ContentChunkJSON`` splices JSON-encoded text into bytes dumped once from the model;
``CompletionBuilder`` validates nested dicts instead of nesting model constructors.
Both must be indistinguishable from the plain model path, byte for byte and field by
field, for any text.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any, Optional

import pytest
from pydantic import BaseModel

from gprochat.openai.builder import (
    CompletionBuilder,
    ContentChunkJSON,
    estimate_usage,
    stream_chunk_json,
    stream_chunks,
)
from gprochat.openai.types import ChatCompletionChunk, ChoiceDelta, ChunkChoice, FinishReason

TRICKY = [
    "plain",
    "",
    ' "quoted" and \\backslash\\ and \\" both ',
    "line\nbreak\r\ncarriage\ttab",
    "control \x00 \x01 \x08 \x0b \x0c \x1b \x1f \x7f",
    "unicode: Grüße, naïve café — 日本語のテキスト ✓",
    "emoji: 😀👍🏽👨‍👩‍👧 🇫🇷",
    "</script><script>alert('x')</script>",
    "line separators \u2028 \u2029 and bom \ufeff",
    "{\"content\":\"nested json\"}",
    "\\u0000 looks like an escape",
    "data: [DONE]\n\n",
    "a" * 10_000,
]


def _reference(
    builder: CompletionBuilder, delta: ChoiceDelta, finish_reason: Optional[FinishReason] = None
) -> ChatCompletionChunk:
    """A chunk built the plain way: nested model constructors."""
    return ChatCompletionChunk(
        id=builder.id,
        created=builder.created,
        model=builder.model,
        choices=[ChunkChoice(index=0, delta=delta, finish_reason=finish_reason)],
    )


def _fields_set(model: Any) -> Any:
    """Every nested model's ``model_fields_set`` and values (what "equal" misses)."""
    if isinstance(model, BaseModel):
        return (
            type(model).__name__,
            sorted(model.model_fields_set),
            {name: _fields_set(getattr(model, name)) for name in type(model).model_fields},
            model.model_extra,
        )
    if isinstance(model, list):
        return [_fields_set(item) for item in model]
    return model


@pytest.mark.parametrize("text", TRICKY)
def test_content_chunk_json_equals_model_dump(text: str) -> None:
    builder = CompletionBuilder("gemini-pro")
    dumped = builder.content_chunk(text).model_dump_json().encode()
    assert ContentChunkJSON(builder).encode(text) == dumped
    assert _reference(builder, ChoiceDelta(content=text)).model_dump_json().encode() == dumped
    framed = ContentChunkJSON(builder, prefix=b"data: ", suffix=b"\n\n").encode(text)
    assert framed == b"data: " + dumped + b"\n\n"


@pytest.mark.parametrize(
    "model", ['we"ird\\model\x00gprochat', "has the sentinel \x00gprochat-content\x00 in it"]
)
def test_content_chunk_json_with_odd_model_names(model: str) -> None:
    # The model name and id are in the template: quotes, or the sentinel itself (then
    # there is no safe split and the model path is used), must not change the bytes.
    builder = CompletionBuilder(model, completion_id='id-"\u2028')
    encoder = ContentChunkJSON(builder, prefix=b"<", suffix=b">")
    for text in TRICKY:
        expected = b"<" + builder.content_chunk(text).model_dump_json().encode() + b">"
        assert encoder.encode(text) == expected


def test_lone_surrogate_fails_like_the_model() -> None:
    # Neither path can encode it; the gateway turns either failure into an error event.
    builder = CompletionBuilder("gemini-pro")
    with pytest.raises(ValueError) as model_error:
        builder.content_chunk("bad \ud800").model_dump_json()
    with pytest.raises(ValueError) as fast_error:
        ContentChunkJSON(builder).encode("bad \ud800")
    assert type(model_error.value) is type(fast_error.value)


@pytest.mark.parametrize("text", TRICKY)
def test_builder_chunks_equal_nested_constructors(text: str) -> None:
    builder = CompletionBuilder("gemini-pro")
    pairs = [
        (builder.content_chunk(text), _reference(builder, ChoiceDelta(content=text))),
        (builder.role_chunk(), _reference(builder, ChoiceDelta(role="assistant", content=""))),
        (builder.finish_chunk(), _reference(builder, ChoiceDelta(), "stop")),
        (builder.finish_chunk("length"), _reference(builder, ChoiceDelta(), "length")),
        (builder.chunk(ChoiceDelta(content=text)), _reference(builder, ChoiceDelta(content=text))),
    ]
    for ours, reference in pairs:
        assert ours == reference
        assert _fields_set(ours) == _fields_set(reference)
        assert ours.model_dump_json() == reference.model_dump_json()


async def _texts(items: Iterable[str], closed: list[bool]) -> AsyncIterator[str]:
    try:
        for item in items:
            yield item
    finally:
        closed.append(True)


@pytest.mark.parametrize("with_usage", [False, True])
@pytest.mark.parametrize("first", ["", "first text: \"é\"\n"])
async def test_stream_chunk_json_equals_dumped_stream_chunks(with_usage: bool, first: str) -> None:
    messages = [{"role": "user", "content": "Hi there"}] if with_usage else None
    builder = CompletionBuilder("gemini-pro")
    closed: list[bool] = []
    chunks = [
        chunk
        async for chunk in stream_chunks(
            builder, _texts(TRICKY, closed), messages=messages, first=first
        )
    ]
    events = [
        event
        async for event in stream_chunk_json(
            builder, _texts(TRICKY, closed), messages=messages, first=first,
            prefix=b"data: ", suffix=b"\n\n",
        )
    ]
    assert closed == [True, True]
    assert events == [b"data: " + chunk.model_dump_json().encode() + b"\n\n" for chunk in chunks]
    # The sequence: role, one content chunk per non-empty text, finish, maybe usage.
    texts = [text for text in [first, *TRICKY] if text]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [chunk.choices[0].delta.content for chunk in chunks[1 : 1 + len(texts)]] == texts
    assert chunks[1 + len(texts)].choices[0].finish_reason == "stop"
    if messages is None:
        assert len(chunks) == len(texts) + 2
    else:
        assert len(chunks) == len(texts) + 3
        assert chunks[-1].choices == []
        assert chunks[-1].usage == estimate_usage(messages, "".join(texts))


async def test_stream_chunk_json_propagates_errors_and_closes_texts() -> None:
    closed: list[bool] = []

    async def failing() -> AsyncIterator[str]:
        try:
            yield "partial"
            raise ConnectionError("upstream went away")
        finally:
            closed.append(True)

    builder = CompletionBuilder("gemini-pro")
    events: list[bytes] = []
    with pytest.raises(ConnectionError):
        async for event in stream_chunk_json(builder, failing()):
            events.append(event)
    assert closed == [True]
    # No finish chunk for a cut answer.
    assert events == [
        builder.role_chunk().model_dump_json().encode(),
        builder.content_chunk("partial").model_dump_json().encode(),
    ]
