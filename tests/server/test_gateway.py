"""The OpenAI gateway over real HTTP: shapes, SSE framing, errors, API keys, OpenAPI."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any, Optional

import aiohttp
import jsonschema
import pytest

from gprochat.errors import BackendError
from gprochat.server import BackgroundServer
from gprochat.server.backends import Backend, Conversation, EchoBackend

from ..conftest import ServerFactory

HELLO = [{"role": "user", "content": "Hello gateway"}]


class ScriptedBackend(Backend):
    """Sends ``texts``, then raises ``error`` if given; records what it was asked."""

    name = "scripted"
    accepts_images = True  # records them, for the image tests

    def __init__(self, texts: list[str], error: Optional[BaseException] = None) -> None:
        self.texts = texts
        self.error = error
        self.conversations: list[Conversation] = []
        self.closed = 0

    async def stream(self, conversation: Conversation) -> AsyncIterator[str]:
        self.conversations.append(conversation)
        try:
            for text in self.texts:
                yield text
            if self.error is not None:
                raise self.error
        finally:
            self.closed += 1


async def post(server: BackgroundServer, body: Any, **kwargs: Any) -> tuple[int, Any, Any]:
    """POST /v1/chat/completions; (status, JSON body, headers)."""
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    headers = {"Content-Type": "application/json", **kwargs.pop("headers", {})}
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{server.base_url}/v1/chat/completions", data=data, headers=headers, **kwargs
        ) as response:
            return response.status, await response.json(content_type=None), response.headers


async def sse_events(server: BackgroundServer, body: dict[str, Any]) -> list[str]:
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{server.base_url}/v1/chat/completions", json={**body, "stream": True}
        ) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/event-stream")
            text = (await response.read()).decode()
    assert text.endswith("\n\n")
    events = text.split("\n\n")[:-1]
    assert all(event.startswith("data: ") for event in events)
    return [event[len("data: "):] for event in events]


async def test_models_list_and_retrieve(echo_server: BackgroundServer) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{echo_server.base_url}/v1/models") as response:
            assert response.status == 200
            page = await response.json()
        async with session.get(f"{echo_server.base_url}/v1/models/echo") as response:
            model = await response.json()
        async with session.get(f"{echo_server.base_url}/v1/models/gpt-4") as response:
            missing = (response.status, await response.json())
    assert page["object"] == "list"
    assert [m["id"] for m in page["data"]] == ["echo"]
    assert page["data"][0]["object"] == "model"
    assert model["id"] == "echo" and model["owned_by"] == "gprochat"
    assert missing[0] == 404
    assert missing[1]["error"]["code"] == "model_not_found"


async def test_retrieving_a_model_with_an_empty_id_is_a_404_not_the_default(
    echo_server: BackgroundServer,
) -> None:
    # "" means the default in a completion's "model"; in a URL it names nothing.
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{echo_server.base_url}/v1/models/") as response:
            status, body = response.status, await response.json()
    assert status == 404
    assert body["error"]["code"] == "model_not_found"
    assert "GET /v1/models lists them" in body["error"]["message"]


async def test_models_were_created_when_the_server_started(make_server: ServerFactory) -> None:
    before = int(time.time())
    server = make_server()
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{server.base_url}/v1/models") as response:
            (listed,) = (await response.json())["data"]
        async with session.get(f"{server.base_url}/v1/models/echo") as response:
            retrieved = await response.json()
    # OpenAI's four keys, and a real Unix time (it was 0): the server's start.
    assert listed == retrieved == {"id": "echo", "object": "model", "created": listed["created"],
                                   "owned_by": "gprochat"}
    assert before <= listed["created"] <= time.time()


async def test_non_streamed_completion(echo_server: BackgroundServer) -> None:
    status, body, headers = await post(echo_server, {"model": "echo", "messages": HELLO})
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert body["model"] == "echo"
    (choice,) = body["choices"]
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"].endswith("Hello gateway")
    assert choice["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["prompt_tokens"] == 4  # ceil(len("Hello gateway") / 4)
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 4


async def test_streamed_completion_framing(make_server: ServerFactory) -> None:
    # Paced, so the chunks are not ready together (those would be joined into one).
    events = await sse_events(
        make_server(backend=EchoBackend(delay=0.005)),
        {"model": "echo", "messages": HELLO, "stream_options": {"include_usage": True}},
    )
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    *content, finish, usage = chunks[1:]
    assert len(content) > 1  # streamed, not one blob
    text = "".join(c["choices"][0]["delta"]["content"] for c in content)
    assert text.endswith("Hello gateway")
    assert all(c["choices"][0]["finish_reason"] is None for c in content)
    assert finish["choices"][0]["finish_reason"] == "stop"
    assert usage["choices"] == [] and usage["usage"]["prompt_tokens"] == 4


async def test_stream_without_usage_ends_with_stop(echo_server: BackgroundServer) -> None:
    events = await sse_events(echo_server, {"model": "echo", "messages": HELLO})
    last = json.loads(events[-2])
    assert last["choices"][0]["finish_reason"] == "stop"
    # Not asked for: no usage chunk, and no usage key (OpenAI sends none either).
    assert all("usage" not in json.loads(event) for event in events[:-1])


async def test_conversation_reaches_backend(make_server: ServerFactory) -> None:
    backend = ScriptedBackend(["ok"])
    server = make_server(backend=backend, system_prompt="Server rules.")
    messages = [
        {"role": "developer", "content": "Be terse."},
        {"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}]},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Joke?"},
    ]
    status, body, _ = await post(server, {
        "model": "scripted", "messages": messages, "temperature": 0.5, "max_tokens": 9,
        "stop": "END", "top_p": 0.9, "seed": 1, "user": "u1",
    })
    assert status == 200, body
    (conversation,) = backend.conversations
    assert conversation.system == "Server rules.\n\nBe terse."
    assert [(t.role, t.text) for t in conversation.history] == [("user", "Hi there"), ("model", "Hello")]
    assert conversation.message == "Joke?"
    assert (conversation.model, conversation.temperature, conversation.max_tokens) == ("scripted", 0.5, 9)
    assert conversation.stop == ("END",)
    assert (conversation.top_p, conversation.seed) == (0.9, 1)


@pytest.mark.parametrize(
    ("body", "param", "says"),
    [
        (b"{not json", None, "not valid JSON"),
        ({"messages": HELLO}, "model", "Missing required parameter"),
        ({"model": "echo"}, "messages", "Missing required parameter"),
        ({"model": "echo", "messages": []}, "messages", "at least 1"),
        ({"model": "echo", "messages": HELLO, "temperature": 5}, "temperature", "temperature"),
        ({"model": "echo", "messages": HELLO, "n": 2}, "n", "not supported"),
        ({"model": "echo", "messages": HELLO, "stop": ["a", "b", "c", "d", "e"]}, "stop",
         "'stop': at most 4 stop strings"),
        ({"model": "echo", "messages": HELLO, "stop": "x" * 257}, "stop", "at most 256"),
        ({"model": "echo", "messages": HELLO, "tools": [{"type": "function"}]}, "tools", "not supported"),
        ({"model": "echo", "messages": HELLO, "response_format": {"type": "json_object"}},
         "response_format", "not supported"),
        ({"model": "echo", "messages": HELLO, "logprobs": True}, "logprobs", "not supported"),
        ({"model": "echo", "messages": HELLO, "bogus": 1}, "bogus", "Unrecognized request argument"),
        ({"model": "echo", "messages": [{"role": "robot", "content": "x"}]}, "messages[0].role", "robot"),
        ({"model": "echo", "messages": [{"role": "tool", "content": "x"}]}, "messages[0].role",
         "tool calling"),
        ({"model": "echo", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "http://x"}}]}]},
         "messages[0].content[0].image_url.url", "--fetch-image-urls"),
        ({"model": "echo", "messages": [{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {}}]}]},
         "messages[0].content[0].type", "only text parts"),
        ({"model": "echo", "messages": [*HELLO, {"role": "assistant", "content": "x"}]},
         "messages", "last message must be from the user"),
        ({"model": "echo", "messages": [{"role": "user", "content": [
            {"type": "text", "text": None}]}]},
         "messages[0].content[0].text", "NoneType, not a string"),
        ({"model": "echo", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "a"}, {"type": "text", "text": {"a": [1]}}]}]},
         "messages[0].content[1].text", "dict, not a string"),
        ({"model": "echo", "messages": [{"role": "user", "content": [{"type": "text"}]}]},
         "messages[0].content[0].text", "is missing"),
    ],
)
async def test_bad_requests_are_400_naming_the_param(
    echo_server: BackgroundServer, body: Any, param: Optional[str], says: str
) -> None:
    status, answer, _ = await post(echo_server, body)
    assert status == 400, answer
    error = answer["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert says in error["message"]


async def test_an_empty_model_means_the_servers_default(make_server: ServerFactory) -> None:
    # Our Client's docs say model="" is the default, and it sends it so.
    server = make_server(backend=EchoBackend(delay=0.001))
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{server.base_url}/v1/models") as response:
            default = (await response.json())["data"][0]["id"]
    status, body, _ = await post(server, {"model": "", "messages": HELLO})
    assert status == 200, body
    assert body["model"] == default == "echo"
    assert body["choices"][0]["message"]["content"].endswith("Hello gateway")
    events = await sse_events(server, {"model": "", "messages": HELLO})
    assert {json.loads(event)["model"] for event in events[:-1]} == {"echo"}


async def test_an_empty_model_on_a_relay_is_the_providers_default(make_server: ServerFactory) -> None:
    deployment = make_server()
    relay = make_server(relay_url=deployment.base_url)
    status, body, _ = await post(relay, {"model": "", "messages": HELLO})
    assert status == 200, body
    assert body["model"] == "gemini-1.5-pro"
    status, body, _ = await post(relay, {"model": "gemini-pro", "messages": HELLO})
    assert body["model"] == "gemini-1.5-pro"  # an alias answers as the name it stands for


async def test_wrong_content_type_is_400(echo_server: BackgroundServer) -> None:
    status, answer, _ = await post(
        echo_server, json.dumps({"model": "echo", "messages": HELLO}),
        headers={"Content-Type": "text/plain"},
    )
    assert status == 400
    assert "application/json" in answer["error"]["message"]


async def test_unknown_model_is_404(echo_server: BackgroundServer) -> None:
    status, answer, _ = await post(echo_server, {"model": "gpt-4o", "messages": HELLO})
    assert status == 404
    assert answer["error"]["code"] == "model_not_found"
    assert answer["error"]["param"] == "model"
    assert "echo" in answer["error"]["message"]
    assert '"" for the default (echo)' in answer["error"]["message"]


async def test_api_keys(make_server: ServerFactory) -> None:
    server = make_server(api_keys=("k-one", "k-two"))
    body = {"model": "echo", "messages": HELLO}
    status, answer, headers = await post(server, body)
    assert status == 401 and answer["error"]["code"] == "invalid_api_key"
    assert "Authorization: Bearer" in answer["error"]["message"]
    assert headers["WWW-Authenticate"] == "Bearer"
    status, answer, _ = await post(server, body, headers={"Authorization": "Bearer nope"})
    assert status == 401 and "Incorrect API key" in answer["error"]["message"]
    # The key is checked before the body: a wrong key with a bad body is still 401.
    status, _, _ = await post(server, b"{", headers={"Authorization": "Bearer nope"})
    assert status == 401
    status, answer, _ = await post(server, body, headers={"Authorization": "Bearer k-two"})
    assert status == 200, answer
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{server.base_url}/v1/models") as response:
            assert response.status == 401


async def test_rate_limited_backend_is_429_with_retry_after(make_server: ServerFactory) -> None:
    server = make_server(backend=ScriptedBackend([], BackendError("slow down", status=429, retry_after=7)))
    status, answer, headers = await post(server, {"model": "scripted", "messages": HELLO})
    assert status == 429
    assert headers["Retry-After"] == "7"
    assert answer["error"]["type"] == "rate_limit_exceeded"


async def test_backend_failure_before_text_is_5xx(make_server: ServerFactory) -> None:
    backend = ScriptedBackend([], BackendError("upstream exploded", status=502))
    server = make_server(backend=backend)
    for stream in (False, True):
        status, answer, _ = await post(server, {"model": "scripted", "messages": HELLO, "stream": stream})
        assert status == 502
        assert answer["error"]["type"] == "server_error"
        assert "upstream exploded" in answer["error"]["message"]
    assert backend.closed == 2


async def test_failure_mid_answer_non_streamed_is_5xx(make_server: ServerFactory) -> None:
    server = make_server(backend=ScriptedBackend(["part one "], BackendError("cut", status=502)))
    status, answer, _ = await post(server, {"model": "scripted", "messages": HELLO})
    assert status == 502
    assert "cut" in answer["error"]["message"]


async def test_failure_mid_stream_sends_error_event_then_cuts(make_server: ServerFactory) -> None:
    server = make_server(backend=ScriptedBackend(["part one ", "part two "], RuntimeError("boom")))
    received = b""
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{server.base_url}/v1/chat/completions",
            json={"model": "scripted", "messages": HELLO, "stream": True},
        ) as response:
            assert response.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                async for data in response.content.iter_any():
                    received += data
    events = [e[len("data: "):] for e in received.decode().split("\n\n") if e]
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    # The exception's text stays in the server's log: clients get no internals.
    assert error["type"] == "server_error" and "boom" not in error["message"]
    assert "log has the details" in error["message"]
    chunks = [json.loads(e) for e in events[:-2]]
    assert "".join(c["choices"][0]["delta"]["content"] or "" for c in chunks) == "part one part two "
    # No chunk claims the answer finished.
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks)


async def test_client_leaving_mid_stream_closes_backend(make_server: ServerFactory) -> None:
    class Endless(ScriptedBackend):
        async def stream(self, conversation: Conversation) -> AsyncIterator[str]:
            import asyncio

            try:
                while True:
                    yield "more "
                    await asyncio.sleep(0.01)
            finally:
                self.closed += 1

    backend = Endless([])
    server = make_server(backend=backend)
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{server.base_url}/v1/chat/completions",
            json={"model": "scripted", "messages": HELLO, "stream": True},
        ) as response:
            await response.content.readuntil(b"more ")
    import asyncio

    for _ in range(500):
        if backend.closed:
            break
        await asyncio.sleep(0.01)
    assert backend.closed == 1


async def test_gateway_can_be_turned_off(make_server: ServerFactory) -> None:
    server = make_server(gateway=False)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{server.base_url}/v1/models") as response:
            assert response.status == 404


async def test_openapi_schema_describes_the_routes(echo_server: BackgroundServer) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{echo_server.base_url}/openapi.json") as response:
            schema = await response.json()
    paths = schema["paths"]
    assert set(paths) >= {"/v1/models", "/v1/models/{model_id}", "/v1/chat/completions"}
    assert "/api/generate" not in paths  # GeminiProChat routes stay out of the schema
    operation = paths["/v1/chat/completions"]["post"]
    assert "422" not in operation["responses"]
    assert "400" in operation["responses"] and "401" in operation["responses"]
    request_ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    request_schema = schema["components"]["schemas"][request_ref.rsplit("/", 1)[1]]
    assert {"model", "messages", "stream", "temperature", "n", "tools"} <= set(request_schema["properties"])
    assert request_schema["additionalProperties"] is False
    content = operation["responses"]["200"]["content"]

    def validator(ref: str) -> jsonschema.protocols.Validator:
        return jsonschema.Draft202012Validator({"$ref": ref, "components": schema["components"]})

    _, body, _ = await post(echo_server, {"model": "echo", "messages": HELLO})
    validator(content["application/json"]["schema"]["$ref"]).validate(body)
    events = await sse_events(echo_server, {"model": "echo", "messages": HELLO})
    for event in events[:-1]:
        validator(content["text/event-stream"]["schema"]["$ref"]).validate(json.loads(event))
    list_ref = paths["/v1/models"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{echo_server.base_url}/v1/models") as response:
            validator(list_ref).validate(await response.json())
    error_ref = operation["responses"]["400"]["content"]["application/json"]["schema"]["$ref"]
    _, error, _ = await post(echo_server, {"model": "echo", "messages": HELLO, "n": 5})
    validator(error_ref).validate(error)
    # And the schema is not vacuous: a wrong shape fails it.
    with pytest.raises(jsonschema.ValidationError):
        validator(content["application/json"]["schema"]["$ref"]).validate({**body, "choices": "x"})
