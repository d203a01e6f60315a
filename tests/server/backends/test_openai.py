"""OpenAIBackend against a scripted OpenAI-compatible upstream on loopback."""

from __future__ import annotations

import asyncio
import json
from contextlib import aclosing
from typing import Any

import pytest

from gprochat.errors import BackendError
from gprochat.server.backends import BACKENDS, Conversation, OpenAIBackend, Turn

CONVERSATION = Conversation(
    message="Tell me a joke",
    history=(Turn("user", "Hi"), Turn("model", "Hello! How can I help?")),
    system="You are terse.",
)


def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
    """One ``chat.completion.chunk`` event as api.openai.com writes it."""
    event = {
        "id": "chatcmpl-AB12",
        "object": "chat.completion.chunk",
        "created": 1718000000,
        "model": "gpt-4o-mini-2024-07-18",
        "system_fingerprint": "fp_0ba0d124f1",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }
    return b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"


def answer(*texts: str) -> list[bytes]:
    """A whole streamed answer: role-only first chunk, contents, finish chunk, [DONE]."""
    return [
        chunk({"role": "assistant", "content": "", "refusal": None}),
        *(chunk({"content": text}) for text in texts),
        chunk({}, "stop"),
        b"data: [DONE]\n\n",
    ]


@pytest.fixture
def backend(upstream, closing) -> OpenAIBackend:
    return closing(OpenAIBackend(base_url=upstream.url + "/v1", api_key="sk-test", model="gpt-x"))


async def collect(backend, conversation=CONVERSATION) -> list[str]:
    return [text async for text in backend.stream(conversation)]


async def collect_until_error(backend, conversation=CONVERSATION):
    texts: list[str] = []
    with pytest.raises(BackendError) as caught:
        async for text in backend.stream(conversation):
            texts.append(text)
    return texts, caught.value


async def test_request_maps_conversation_and_streams_in_chunks(upstream, backend):
    upstream.respond_events(answer("Why did", " the chicken", " cross?"))

    assert await collect(backend) == ["Why did", " the chicken", " cross?"]

    [request] = upstream.requests
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    assert request.headers["Authorization"] == "Bearer sk-test"
    assert request.headers["Content-Type"] == "application/json"
    assert request.json == {
        "model": "gpt-x",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello! How can I help?"},
            {"role": "user", "content": "Tell me a joke"},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def test_conversation_options_are_passed_and_no_key_sends_no_auth(upstream, closing):
    backend = closing(OpenAIBackend(base_url=upstream.url + "/v1", model="llama3.2"))
    upstream.respond_events(answer("ok"))
    conversation = Conversation(
        message="Hi", model="qwen2.5", temperature=0.2, max_tokens=50, stop=("\n\n",),
        top_p=0.5, seed=7,
    )

    assert await collect(backend, conversation) == ["ok"]

    [request] = upstream.requests
    assert "Authorization" not in request.headers
    assert request.json == {
        "model": "qwen2.5",
        "messages": [{"role": "user", "content": "Hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0.2,
        "max_tokens": 50,
        "stop": ["\n\n"],
        "top_p": 0.5,
        "seed": 7,
    }
    assert backend.models() == ["llama3.2"]


async def test_events_split_at_awkward_places(upstream, backend):
    texts = ["Grüße, ", "世界 ", "🙂 done"]
    # Odd write sizes put boundaries mid-line, mid-"data:", mid-UTF-8 character.
    pieces = [b": OPENROUTER PROCESSING\n\n", *answer(*texts)]
    upstream.respond_events(pieces, split=(7, 1, 13, 2, 5), pause=0.001)

    assert await collect(backend) == texts


async def test_connection_is_reused_between_requests(upstream, backend):
    upstream.respond_events(answer("one"))
    await collect(backend)
    await collect(backend)

    first, second = upstream.requests
    assert first.peer == second.peer


async def test_401_is_a_configuration_error(upstream, backend):
    upstream.respond_error(
        401,
        {
            "error": {
                "message": "Incorrect API key provided: sk-test.",
                "type": "invalid_request_error",
                "param": None,
                "code": "invalid_api_key",
            }
        },
    )

    texts, error = await collect_until_error(backend)

    assert texts == []
    assert error.status == 502
    assert "configuration error" in error.message
    # What to set, and what the upstream said, go to the operator's log, not to the client.
    assert "--openai-api-key" in error.detail and "GPROCHAT_OPENAI_API_KEY" in error.detail
    assert "Incorrect API key provided" in error.detail
    assert "--openai-api-key" not in error.message


async def test_429_passes_retry_after(upstream, backend):
    upstream.respond_error(
        429, {"error": {"message": "Rate limit reached", "type": "requests"}}, {"Retry-After": "7"}
    )

    _, error = await collect_until_error(backend)

    assert (error.status, error.retry_after) == (429, 7.0)
    assert "Rate limit reached" in error.message


@pytest.mark.parametrize("status", [400, 404, 500, 503])
async def test_other_error_statuses_become_502_quoting_the_upstream(upstream, backend, status):
    upstream.respond_error(status, {"error": {"message": f"upstream says {status}"}})

    _, error = await collect_until_error(backend)

    assert error.status == 502
    assert f"upstream says {status}" in error.message


async def test_error_body_that_is_not_json_is_quoted_raw(upstream, backend):
    upstream.respond_error(502, "<html>Bad Gateway</html>")

    _, error = await collect_until_error(backend)

    assert error.status == 502 and "<html>Bad Gateway</html>" in error.message


async def test_connection_cut_mid_stream_fails_after_the_first_text(upstream, backend):
    upstream.respond_events(answer("partial", " answer")[:3], then="abort")

    texts, error = await collect_until_error(backend)

    assert texts == ["partial", " answer"]
    assert "upstream stream ended early" in error.message


async def test_clean_end_without_done_is_an_early_end(upstream, backend):
    upstream.respond_events(answer("partial")[:2])

    texts, error = await collect_until_error(backend)

    assert texts == ["partial"]
    assert "ended early" in error.message and "[DONE]" in error.message


async def test_error_event_mid_stream(upstream, backend):
    error_event = b'data: {"error": {"message": "model overloaded", "code": 503}}\n\n'
    upstream.respond_events([*answer("a")[:2], error_event])

    texts, error = await collect_until_error(backend)

    assert texts == ["a"] and "model overloaded" in error.message


async def test_content_filter_is_reported(upstream, backend):
    upstream.respond_events([*answer("a")[:2], chunk({}, "content_filter"), b"data: [DONE]\n\n"])

    texts, error = await collect_until_error(backend)

    assert texts == ["a"] and "content_filter" in error.message


async def test_refused_port_is_a_502(refused_url, closing):
    backend = closing(OpenAIBackend(base_url=refused_url + "/v1", model="m"))

    _, error = await collect_until_error(backend)

    assert error.status == 502
    assert refused_url not in error.message
    assert f"cannot reach upstream URL {refused_url}/v1/chat/completions" in error.detail


async def test_silent_upstream_is_a_504(upstream, closing):
    backend = closing(OpenAIBackend(base_url=upstream.url + "/v1", model="m", read_timeout=0.2))
    upstream.respond_events(answer("slow")[:2], then="stall")

    texts, error = await collect_until_error(backend)

    assert texts == ["slow"]
    assert error.status == 504 and "read timeout 0.2s" in error.message


async def test_html_page_is_reported_as_a_base_url_problem(upstream, closing):
    backend = closing(OpenAIBackend(base_url=upstream.url, model="m"))
    upstream.respond_events([b"<html>hello</html>"], content_type="text/html")

    _, error = await collect_until_error(backend)

    assert error.status == 502 and "configuration error" in error.message
    assert "check the base URL" in error.detail and upstream.url not in error.message


async def test_consumer_stopping_early_closes_the_upstream_connection(upstream, backend):
    upstream.respond_events(answer("first")[:2], then="hang")

    async with aclosing(backend.stream(CONVERSATION)) as stream:
        async for text in stream:
            assert text == "first"
            break

    await asyncio.wait_for(upstream.client_went_away.wait(), timeout=5)


def test_constructor_checks_options():
    with pytest.raises(ValueError, match="--openai-api-key"):
        OpenAIBackend()
    with pytest.raises(ValueError, match="base URL"):
        OpenAIBackend(base_url="localhost:11434/v1")
    assert BACKENDS["openai"] is OpenAIBackend
