"""The builder's fast paths give exactly what the pydantic models give.

``ContentChunkJSON`` splices JSON-encoded text into bytes dumped once from the model;
``CompletionBuilder`` validates nested dicts instead of nesting model constructors.
Both must be indistinguishable from the plain model path, byte for byte and field by
field, for any text. And what the builder sets is what OpenAI's API sends: ``wire_json``
writes no ``null`` beyond OpenAI's, while the objects keep every attribute.
"""

from __future__ import annotations

import json
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
from gprochat.openai.types import (
    ChatCompletionChunk,
    ChoiceDelta,
    ChunkChoice,
    FinishReason,
    wire_json,
)

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
    """A chunk built the plain way: nested model constructors, OpenAI's fields given."""
    extra = {"usage": None} if builder.include_usage else {}
    return ChatCompletionChunk(
        id=builder.id,
        object="chat.completion.chunk",
        created=builder.created,
        model=builder.model,
        system_fingerprint=None,
        choices=[ChunkChoice(index=0, delta=delta, logprobs=None, finish_reason=finish_reason)],
        **extra,
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
    dumped = wire_json(builder.content_chunk(text))
    assert ContentChunkJSON(builder).encode(text) == dumped
    assert wire_json(_reference(builder, ChoiceDelta(content=text))) == dumped
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
        expected = b"<" + wire_json(builder.content_chunk(text)) + b">"
        assert encoder.encode(text) == expected


def test_lone_surrogate_fails_like_the_model() -> None:
    # Neither path can encode it; the gateway turns either failure into an error event.
    builder = CompletionBuilder("gemini-pro")
    with pytest.raises(ValueError) as model_error:
        wire_json(builder.content_chunk("bad \ud800"))
    with pytest.raises(ValueError) as fast_error:
        ContentChunkJSON(builder).encode("bad \ud800")
    assert type(model_error.value) is type(fast_error.value)


@pytest.mark.parametrize("include_usage", [False, True])
@pytest.mark.parametrize("text", TRICKY)
def test_builder_chunks_equal_nested_constructors(text: str, include_usage: bool) -> None:
    builder = CompletionBuilder("gemini-pro", include_usage=include_usage)
    role = ChoiceDelta(role="assistant", content="", refusal=None)
    pairs = [
        (builder.content_chunk(text), _reference(builder, ChoiceDelta(content=text))),
        (builder.role_chunk(), _reference(builder, role)),
        (builder.finish_chunk(), _reference(builder, ChoiceDelta(), "stop")),
        (builder.finish_chunk("length"), _reference(builder, ChoiceDelta(), "length")),
        (builder.chunk(ChoiceDelta(content=text)), _reference(builder, ChoiceDelta(content=text))),
    ]
    for ours, reference in pairs:
        assert ours == reference
        assert _fields_set(ours) == _fields_set(reference)
        assert ours.model_dump_json() == reference.model_dump_json()
        assert wire_json(ours) == wire_json(reference)


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
    builder = CompletionBuilder("gemini-pro", include_usage=with_usage)
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
    assert events == [b"data: " + wire_json(chunk) + b"\n\n" for chunk in chunks]
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
        wire_json(builder.role_chunk()),
        wire_json(builder.content_chunk("partial")),
    ]


# What OpenAI's API sends as null in a plain text answer; the openai package's models
# define many more fields (audio, tool_calls, moderation, obfuscation, ...), all unset here.
OPENAI_NULLS = {"system_fingerprint", "logprobs", "finish_reason", "refusal", "usage"}


def _null_keys(value: Any) -> set[str]:
    if isinstance(value, dict):
        found = {key for key, item in value.items() if item is None}
        for item in value.values():
            found |= _null_keys(item)
        return found
    if isinstance(value, list):
        return set().union(*(_null_keys(item) for item in value)) if value else set()
    return set()


@pytest.mark.parametrize("include_usage", [False, True])
def test_wire_json_sends_openai_fields_only(include_usage: bool) -> None:
    builder = CompletionBuilder("echo", include_usage=include_usage)
    usage = estimate_usage([{"role": "user", "content": "Hi"}], "abc")
    chunks = [builder.role_chunk(), builder.content_chunk("abc"), builder.finish_chunk(),
              builder.usage_chunk(usage)]
    for chunk in chunks:
        sent = json.loads(wire_json(chunk))
        assert list(sent)[:5] == ["id", "object", "created", "model", "system_fingerprint"]
        assert sent["object"] == "chat.completion.chunk"
        assert _null_keys(sent) <= OPENAI_NULLS
        assert ("usage" in sent) == (include_usage or chunk is chunks[-1])
        # The object itself still has every attribute the openai package's has.
        assert chunk.service_tier is None and chunk.obfuscation is None
    assert json.loads(wire_json(chunks[1]))["choices"] == [
        {"index": 0, "delta": {"content": "abc"}, "logprobs": None, "finish_reason": None}
    ]
    assert json.loads(wire_json(chunks[0]))["choices"][0]["delta"] == {
        "role": "assistant", "content": "", "refusal": None
    }
    assert json.loads(wire_json(chunks[2]))["choices"][0]["delta"] == {}

    completion = json.loads(wire_json(builder.completion("Hello", usage)))
    assert list(completion) == [
        "id", "object", "created", "model", "choices", "usage", "system_fingerprint"
    ]
    assert completion["choices"] == [{
        "index": 0,
        "message": {"role": "assistant", "content": "Hello", "refusal": None, "annotations": []},
        "logprobs": None,
        "finish_reason": "stop",
    }]
    assert completion["usage"] == {
        "prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2, "estimated": True
    }
    assert _null_keys(completion) <= OPENAI_NULLS
