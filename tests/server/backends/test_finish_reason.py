"""The gateway says why an answer ended (``finish_reason``) and passes on token counts,
as each backend reports them, against scripted upstreams on loopback."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from gprochat.server.backends import GeminiBackend, OpenAIBackend

from ...conftest import ServerFactory
from .test_gemini import USAGE, text_event
from .test_openai import chunk

ASK = {"model": "m", "messages": [{"role": "user", "content": "Tell me a story"}], "max_tokens": 3}


def _openai_cut_answer() -> list[bytes]:
    usage = {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}
    return [
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Once upon a"}),
        chunk({}, "length"),
        b"data: " + json.dumps({"id": "chatcmpl-AB12", "object": "chat.completion.chunk",
                                "created": 1, "model": "m", "choices": [], "usage": usage}).encode()
        + b"\n\n",
        b"data: [DONE]\n\n",
    ]


async def _post(base_url: str, body: dict[str, Any]) -> Any:
    async with aiohttp.ClientSession() as session, session.post(
        base_url + "/v1/chat/completions", json=body
    ) as response:
        assert response.status == 200, await response.text()
        if not body.get("stream"):
            return await response.json()
        events = []
        async for line in response.content:
            if line.startswith(b"data: {"):
                events.append(json.loads(line[6:]))
        return events


async def test_an_answer_cut_by_the_token_limit_says_length(upstream, make_server: ServerFactory):
    upstream.respond_events(_openai_cut_answer())
    server = make_server(backend=OpenAIBackend(base_url=upstream.url + "/v1", model="m"))

    completion = await _post(server.base_url, ASK)

    assert completion["choices"][0]["finish_reason"] == "length"
    usage = completion["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (11, 3, 14)
    assert "estimated" not in usage


async def test_a_streamed_answer_cut_by_the_token_limit_says_length(
    upstream, make_server: ServerFactory
):
    upstream.respond_events(_openai_cut_answer())
    server = make_server(backend=OpenAIBackend(base_url=upstream.url + "/v1", model="m"))

    events = await _post(server.base_url, {**ASK, "stream": True,
                                           "stream_options": {"include_usage": True}})

    finishes = [c["finish_reason"] for e in events for c in e["choices"] if c["finish_reason"]]
    assert finishes == ["length"]
    assert events[-1]["usage"]["completion_tokens"] == 3


async def test_gemini_max_tokens_is_length_and_its_usage_metadata_is_the_usage(
    upstream, make_server: ServerFactory
):
    upstream.respond_events([text_event("Once upon "), text_event("a", "MAX_TOKENS")])
    server = make_server(backend=GeminiBackend(api_key="AIza-test", base_url=upstream.url))

    completion = await _post(server.base_url, {**ASK, "model": "gemini-2.0-flash"})

    assert completion["choices"][0]["finish_reason"] == "length"
    assert completion["usage"]["prompt_tokens"] == USAGE["promptTokenCount"]
    assert completion["usage"]["completion_tokens"] == USAGE["candidatesTokenCount"]
    assert "estimated" not in completion["usage"]


async def test_an_answer_the_model_ended_says_stop(upstream, make_server: ServerFactory):
    upstream.respond_events([text_event("The end.", "STOP")])
    server = make_server(backend=GeminiBackend(api_key="AIza-test", base_url=upstream.url))

    completion = await _post(server.base_url, {**ASK, "model": "gemini-2.0-flash"})

    assert completion["choices"][0]["finish_reason"] == "stop"
