"""The gateway's bytes, over real HTTP: what OpenAI's API sends, and no ``null`` padding.

The expected events are written out here as plain JSON (not built from our models), in
the order OpenAI's API writes the keys. The gateway splices each text into a per-answer
template instead of dumping a chunk model per text; the tricky texts check that splice,
byte for byte, against ``wire_json`` of chunks built with nested pydantic constructors.
"""

from __future__ import annotations

import json
from typing import Any, Optional

import aiohttp
import pytest

from gprochat.openai.builder import estimate_usage
from gprochat.openai.types import (
    ChatCompletionChunk,
    ChoiceDelta,
    ChunkChoice,
    CompletionUsage,
    FinishReason,
    wire_json,
)
from gprochat.server import BackgroundServer

from ..conftest import ServerFactory
from ..test_builder_json import TRICKY
from .test_gateway import ScriptedBackend

MESSAGES = [{"role": "user", "content": "Say tricky things"}]

# The keys OpenAI's API itself sends as null in a plain text answer; nothing else may be.
OPENAI_NULLS = {"system_fingerprint", "logprobs", "finish_reason", "refusal", "usage"}


def _compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _null_keys(value: Any) -> set[str]:
    if isinstance(value, dict):
        found = {key for key, item in value.items() if item is None}
        for item in value.values():
            found |= _null_keys(item)
        return found
    if isinstance(value, list):
        return set().union(*(_null_keys(item) for item in value)) if value else set()
    return set()


async def _stream(server: BackgroundServer, body: dict[str, Any]) -> bytes:
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{server.base_url}/v1/chat/completions", json={**body, "stream": True}
        ) as response:
            assert response.status == 200
            return await response.read()


@pytest.mark.parametrize("include_usage", [False, True])
async def test_stream_events_are_what_openai_sends(
    make_server: ServerFactory, include_usage: bool
) -> None:
    server = make_server(backend=ScriptedBackend(["abc"]))
    body: dict[str, Any] = {"model": "scripted", "messages": MESSAGES}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    raw = await _stream(server, body)

    first = json.loads(raw[len(b"data: ") : raw.index(b"\n\n")])
    ident, created = first["id"], first["created"]
    assert ident.startswith("chatcmpl-") and created > 1_700_000_000

    def chunk(delta: dict[str, Any], finish: Optional[str] = None) -> dict[str, Any]:
        event = {
            "id": ident, "object": "chat.completion.chunk", "created": created,
            "model": "scripted", "system_fingerprint": None,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if include_usage:
            event["usage"] = None  # OpenAI: every chunk but the last says "usage":null
        return event

    expected = [
        chunk({"role": "assistant", "content": "", "refusal": None}),
        chunk({"content": "abc"}),
        chunk({}, "stop"),
    ]
    if include_usage:
        usage = {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6, "estimated": True}
        expected.append({**chunk({}), "choices": [], "usage": usage})
    assert raw == b"".join(b"data: " + _compact(e) + b"\n\n" for e in expected) + b"data: [DONE]\n\n"

    events = [json.loads(e[len(b"data: "):]) for e in raw.split(b"\n\n")[:-2]]
    for event in events:
        assert _null_keys(event) <= OPENAI_NULLS, event
    # The three-character delta's whole event, framing included, is about 240 bytes: it
    # was about 400 when every field the openai package defines went out as null.
    content_event = raw.split(b"\n\n")[1] + b"\n\n"
    padded = ChatCompletionChunk.model_validate_json(content_event[len(b"data: "):])
    assert len(content_event) < 260 < len(b"data: " + padded.model_dump_json().encode() + b"\n\n")


async def test_non_streamed_body_is_what_openai_sends(make_server: ServerFactory) -> None:
    server = make_server(backend=ScriptedBackend(["Hello ", "there"]))
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{server.base_url}/v1/chat/completions",
            json={"model": "scripted", "messages": MESSAGES},
        ) as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "application/json"
            raw = await response.read()
    body = json.loads(raw)
    # OpenAI writes system_fingerprint after usage in a whole completion.
    expected = {
        "id": body["id"], "object": "chat.completion", "created": body["created"],
        "model": "scripted",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": "Hello there", "refusal": None,
                        "annotations": []},
            "logprobs": None,
            "finish_reason": "stop",
        }],
        "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8,
                  "estimated": True},
        "system_fingerprint": None,
    }
    assert raw == _compact(expected)
    assert _null_keys(body) <= OPENAI_NULLS


@pytest.mark.parametrize("include_usage", [False, True])
async def test_stream_bytes_equal_model_dumps(
    make_server: ServerFactory, include_usage: bool
) -> None:
    texts = ["", *TRICKY, "", "end."]  # empty texts make no chunks
    server = make_server(backend=ScriptedBackend(texts))
    body: dict[str, Any] = {"model": "scripted", "messages": MESSAGES}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    raw = await _stream(server, body)

    first = json.loads(raw[len(b"data: ") : raw.index(b"\n\n")])
    ident, created, model = first["id"], first["created"], first["model"]
    extra = {"usage": None} if include_usage else {}

    def chunk(
        delta: ChoiceDelta,
        finish_reason: Optional[FinishReason] = None,
    ) -> ChatCompletionChunk:
        return ChatCompletionChunk(
            id=ident, object="chat.completion.chunk", created=created, model=model,
            system_fingerprint=None,
            choices=[ChunkChoice(index=0, delta=delta, logprobs=None, finish_reason=finish_reason)],
            **extra,
        )

    # The scripted texts are all ready at once: one content chunk carries them all.
    answer = "".join(texts)
    expected = [chunk(ChoiceDelta(role="assistant", content="", refusal=None))]
    expected.append(chunk(ChoiceDelta(content=answer)))
    expected.append(chunk(ChoiceDelta(), "stop"))
    if include_usage:
        usage = estimate_usage(MESSAGES, answer)
        expected.append(ChatCompletionChunk(
            id=ident, object="chat.completion.chunk", created=created, model=model,
            system_fingerprint=None, choices=[],
            usage=CompletionUsage.model_validate(usage.model_dump(exclude_unset=True)),
        ))
    assert model == "scripted"
    assert raw == b"".join(b"data: " + wire_json(c) + b"\n\n" for c in expected) + b"data: [DONE]\n\n"
