"""The gateway's streamed bytes, over real HTTP, equal the plain model path's.

The gateway splices each text into a per-answer template instead of building and
dumping a chunk model per text; this checks the whole body, byte for byte, against
chunks built with nested pydantic constructors and ``model_dump_json``.
"""

from __future__ import annotations

import json
from typing import Optional

import aiohttp
import pytest

from gprochat.openai.builder import estimate_usage
from gprochat.openai.types import (
    ChatCompletionChunk,
    ChoiceDelta,
    ChunkChoice,
    CompletionUsage,
    FinishReason,
)

from ..conftest import ServerFactory
from ..test_builder_json import TRICKY
from .test_gateway import ScriptedBackend

MESSAGES = [{"role": "user", "content": "Say tricky things"}]


def _event(chunk: ChatCompletionChunk) -> bytes:
    return b"data: " + chunk.model_dump_json().encode() + b"\n\n"


@pytest.mark.parametrize("include_usage", [False, True])
async def test_stream_bytes_equal_model_dumps(
    make_server: ServerFactory, include_usage: bool
) -> None:
    texts = ["", *TRICKY, "", "end."]  # empty texts make no chunks
    server = make_server(backend=ScriptedBackend(texts))
    body = {"model": "scripted", "messages": MESSAGES, "stream": True}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{server.base_url}/v1/chat/completions", json=body) as response:
            assert response.status == 200
            raw = await response.read()

    first = json.loads(raw[len(b"data: ") : raw.index(b"\n\n")])
    ident, created, model = first["id"], first["created"], first["model"]

    def chunk(
        delta: ChoiceDelta,
        finish_reason: Optional[FinishReason] = None,
    ) -> ChatCompletionChunk:
        return ChatCompletionChunk(
            id=ident, created=created, model=model,
            choices=[ChunkChoice(index=0, delta=delta, finish_reason=finish_reason)],
        )

    # The scripted texts are all ready at once: one content chunk carries them all.
    answer = "".join(texts)
    expected = [chunk(ChoiceDelta(role="assistant", content=""))]
    expected.append(chunk(ChoiceDelta(content=answer)))
    expected.append(chunk(ChoiceDelta(), "stop"))
    if include_usage:
        usage = estimate_usage(MESSAGES, answer)
        expected.append(ChatCompletionChunk(
            id=ident, created=created, model=model, choices=[],
            usage=CompletionUsage.model_validate(usage.model_dump()),
        ))
    assert model == "scripted"
    assert raw == b"".join(_event(c) for c in expected) + b"data: [DONE]\n\n"
