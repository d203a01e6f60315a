"""Both real backends stream through our server to our client, against scripted upstreams."""

from __future__ import annotations

import json

import aiohttp
import pytest

from gprochat import GPROChat, IncompleteResponseError, RateLimitError, ServerError
from gprochat.server import ServerConfig
from gprochat.server.backends import GeminiBackend, OpenAIBackend

from ...conftest import ServerFactory
from .test_gemini import answer as gemini_answer
from .test_openai import answer as openai_answer

MESSAGES = [
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello"},
    {"role": "user", "content": "Tell me a joke"},
]


async def ask(base_url: str, **kwargs: object) -> list[str]:
    # No retries: each test here is about one answer (retries are tested on their own).
    kwargs.setdefault("max_retries", 0)
    return [c async for c in GPROChat.create_async_generator("", MESSAGES, base_url=base_url, **kwargs)]


async def test_openai_backend_streams_through_our_server(upstream, make_server: ServerFactory) -> None:
    upstream.respond_events(openai_answer("Why did ", "the chicken ", "cross?"))
    backend = OpenAIBackend(base_url=upstream.url + "/v1", api_key="sk-test", model="llama3")
    server = make_server(ServerConfig(system_prompt="Be funny."), backend=backend)
    chunks = await ask(server.base_url)
    assert "".join(chunks) == "Why did the chicken cross?"
    sent = upstream.requests[0]
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["Authorization"] == "Bearer sk-test"
    assert sent.json["messages"][0] == {"role": "system", "content": "Be funny."}
    assert sent.json["messages"][-1]["content"].endswith("Tell me a joke\nAssistant:")


async def test_gemini_backend_streams_through_our_server(upstream, make_server: ServerFactory) -> None:
    upstream.respond_events(gemini_answer("Knock ", "knock."))
    backend = GeminiBackend(api_key="AIza-test", base_url=upstream.url)
    server = make_server(backend=backend)
    assert "".join(await ask(server.base_url)) == "Knock knock."
    assert upstream.requests[0].path.endswith(":streamGenerateContent")
    assert upstream.requests[0].query["alt"] == "sse"


async def test_upstream_cut_mid_answer_reaches_the_client_as_a_cut_body(
    upstream, make_server: ServerFactory
) -> None:
    upstream.respond_events(openai_answer("partial ", "text ", "never")[:2], then="abort")
    server = make_server(backend=OpenAIBackend(base_url=upstream.url + "/v1", api_key="k"))
    with pytest.raises(IncompleteResponseError) as info:
        await ask(server.base_url)
    assert info.value.partial_text.startswith("partial ")


async def test_upstream_rate_limit_passes_retry_after_to_the_client(
    upstream, make_server: ServerFactory
) -> None:
    upstream.respond_error(429, {"error": {"message": "slow down"}}, headers={"Retry-After": "3"})
    server = make_server(backend=OpenAIBackend(base_url=upstream.url + "/v1", api_key="k"))
    with pytest.raises(RateLimitError) as info:
        await ask(server.base_url)
    assert info.value.retry_after == 3


async def test_wrong_upstream_key_is_reported_as_server_configuration(
    upstream, make_server: ServerFactory
) -> None:
    upstream.respond_error(401, {"error": {"message": "Incorrect API key provided"}})
    server = make_server(backend=OpenAIBackend(base_url=upstream.url + "/v1", api_key="bad"))
    with pytest.raises(ServerError) as info:
        await ask(server.base_url)
    assert "configuration" in str(info.value).lower()


def _usage_event(prompt: int, completion: int) -> bytes:
    event = {"id": "chatcmpl-AB12", "object": "chat.completion.chunk", "created": 1718000000,
             "model": "gpt-4o-mini", "choices": [],
             "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                       "total_tokens": prompt + completion}}
    return b"data: " + json.dumps(event).encode() + b"\n\n"


async def _gateway(server: object, body: dict[str, object]) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{server.base_url}/v1/chat/completions", json=body) as response:  # type: ignore[attr-defined]
            return response.status, await response.read()


async def test_gateway_passes_on_the_upstreams_usage_and_id(upstream, make_server: ServerFactory) -> None:
    pieces = openai_answer("Why did ", "the chicken")
    upstream.respond_events([*pieces[:-1], _usage_event(11, 3), pieces[-1]])
    server = make_server(backend=OpenAIBackend(base_url=upstream.url + "/v1", api_key="k", model="m"))
    body = {"model": "m", "messages": [{"role": "user", "content": "Hi"}]}
    status, raw = await _gateway(server, body)
    assert status == 200
    completion = json.loads(raw)
    assert upstream.requests[0].json["stream_options"] == {"include_usage": True}
    assert completion["id"] == "chatcmpl-AB12"
    usage = {k: v for k, v in completion["usage"].items() if v is not None}
    assert usage == {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}

    # Streamed with include_usage: the last chunk carries the upstream's figures.
    status, raw = await _gateway(server, {**body, "stream": True, "stream_options": {"include_usage": True}})
    events = [json.loads(e[6:]) for e in raw.decode().split("\n\n") if e.startswith("data: {")]
    assert {event["id"] for event in events} == {"chatcmpl-AB12"}
    assert events[-1]["usage"]["total_tokens"] == 14 and "estimated" not in events[-1]["usage"]


async def test_gateway_estimates_usage_only_when_the_upstream_gives_none(
    upstream, make_server: ServerFactory
) -> None:
    upstream.respond_events(openai_answer("Why did ", "the chicken"))
    server = make_server(backend=OpenAIBackend(base_url=upstream.url + "/v1", api_key="k", model="m"))
    status, raw = await _gateway(server, {"model": "m", "messages": [{"role": "user", "content": "Hi"}]})
    assert status == 200
    usage = json.loads(raw)["usage"]
    assert usage["estimated"] is True
    assert usage["completion_tokens"] == 5  # ceil(len("Why did the chicken") / 4)
