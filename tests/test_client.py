"""``Client`` / ``AsyncClient``: real answers from our server, and the OpenAI SDK's shapes.

The shape test asks the same conversation twice: our client straight to a GeminiProChat
server, the real ``openai`` SDK through our gateway relaying to that same server. The
objects must agree attribute path by attribute path (ids and timestamps aside).
"""

from __future__ import annotations

import asyncio
from typing import Any

import openai
import pytest
from pydantic import BaseModel

import gprochat
from gprochat import AsyncClient, Client
from gprochat.errors import (
    ConnectError,
    ImageError,
    InvalidParameterError,
    InvalidPasswordError,
    ModelNotSupportedError,
    UnsupportedParameterError,
)
from gprochat.server import BackgroundServer

from .conftest import ServerFactory

SECRET, PASSWORD = "not-the-default-secret", "pw-123"
CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Compare me, field by field"},
]
VOLATILE = {"id", "created"}


def leaves(obj: BaseModel) -> dict[str, Any]:
    """``{"choices[0].message.content": "...", ...}`` for every non-None value."""
    out: dict[str, Any] = {}

    def walk(value: Any, path: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{path}.{key}" if path else key)
        elif isinstance(value, list) and value:
            for index, item in enumerate(value):
                walk(item, f"{path}[{index}]")
        elif value is not None:
            out[path] = value

    walk(obj.model_dump(), "")
    return {path: value for path, value in out.items() if path not in VOLATILE}


@pytest.fixture
def pair(make_server: ServerFactory) -> tuple[BackgroundServer, BackgroundServer]:
    """A password-protected deployment with its own secret, and a gateway relaying to it."""
    upstream = make_server(secret_key=SECRET, passwords=(PASSWORD,))
    gateway = make_server(
        relay_url=upstream.base_url, relay_secret_key=SECRET, relay_password=PASSWORD
    )
    return upstream, gateway


def our_client(server: BackgroundServer) -> Client:
    return Client(base_url=server.base_url, secret_key=SECRET, password=PASSWORD)


def their_client(gateway: BackgroundServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.base_url}/v1", api_key="unused", max_retries=0)


def test_non_streamed_matches_openai_sdk(pair: tuple[BackgroundServer, BackgroundServer]) -> None:
    upstream, gateway = pair
    ours = our_client(upstream).chat.completions.create(
        model="gemini-1.5-pro", messages=CONVERSATION
    )
    theirs = their_client(gateway).chat.completions.create(
        model="gemini-1.5-pro", messages=CONVERSATION  # type: ignore[arg-type]
    )
    assert leaves(ours) == leaves(theirs)
    assert "Compare me, field by field" in (ours.choices[0].message.content or "")
    # Attributes people read exist on ours too, even when empty.
    for obj in (ours, theirs):
        assert obj.choices[0].message.tool_calls is None
        assert obj.choices[0].logprobs is None
        assert obj.system_fingerprint is None
    assert ours.id.startswith("chatcmpl-") and isinstance(ours.created, int)


async def test_streamed_matches_openai_sdk(pair: tuple[BackgroundServer, BackgroundServer]) -> None:
    upstream, gateway = pair
    options = {"model": "gemini-pro", "messages": CONVERSATION, "stream": True,
               "stream_options": {"include_usage": True}}
    sync_chunks = list(our_client(upstream).chat.completions.create(**options))  # type: ignore[call-overload]
    client = AsyncClient(base_url=upstream.base_url, secret_key=SECRET, password=PASSWORD)
    async_chunks = [c async for c in await client.chat.completions.create(**options)]  # type: ignore[call-overload]
    theirs = list(their_client(gateway).chat.completions.create(**options))  # type: ignore[call-overload]

    def summary(chunks: list[Any]) -> dict[str, Any]:
        role, *content, finish, usage = chunks
        return {
            "role": leaves(role),
            "finish": leaves(finish),
            "usage": leaves(usage),
            "text": "".join(c.choices[0].delta.content for c in content),
            "content paths": {frozenset(leaves(c)) for c in content},
            "ids": len({c.id for c in chunks}),
        }

    expected = summary(theirs)
    assert "Compare me, field by field" in expected["text"]
    assert expected["finish"]["choices[0].finish_reason"] == "stop"
    assert expected["ids"] == 1
    assert summary(sync_chunks) == expected
    assert summary(async_chunks) == expected


def test_models_list_like_openai(echo_server: BackgroundServer) -> None:
    page = Client(base_url=echo_server.base_url).models.list()
    assert page.object == "list"
    # The stock name, then what the server's GET /api/models offers (tests/test_client_models.py).
    assert [m.id for m in page] == [m.id for m in page.data] == ["gemini-1.5-pro", "echo"]
    assert page.data[0].object == "model"
    assert Client().models.retrieve("gemini-pro").id == "gemini-1.5-pro"
    with pytest.raises(ModelNotSupportedError):
        Client().models.retrieve("gpt-4o")


async def test_async_models_list() -> None:
    page = await AsyncClient().models.list()
    assert [m.id for m in page] == ["gemini-1.5-pro"]


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"n": 2}, "n"),
        ({"tools": [{"type": "function"}]}, "tools"),
        ({"tool_choice": "auto"}, "tool_choice"),
        ({"response_format": {"type": "json_schema", "json_schema": {}}}, "response_format"),
        ({"logprobs": True}, "logprobs"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"frobnicate": 1}, "frobnicate"),
    ],
)
def test_unhonourable_parameters_raise_before_any_request(params: dict[str, Any], param: str) -> None:
    # Port 9 on loopback: nothing listens; the error must come before any connection.
    client = Client(base_url="http://127.0.0.1:9")
    with pytest.raises(UnsupportedParameterError) as caught:
        client.chat.completions.create(model="", messages=CONVERSATION, **params)
    assert caught.value.param == param
    assert isinstance(caught.value, ValueError)
    assert param in str(caught.value)


@pytest.mark.parametrize(
    "messages",
    [[], [{"role": "assistant", "content": "x"}], [{"role": "tool", "content": "x"}],
     [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]],
)
def test_bad_messages_raise(messages: list[dict[str, Any]]) -> None:
    with pytest.raises(InvalidParameterError):
        Client(base_url="http://127.0.0.1:9").chat.completions.create(model="", messages=messages)


def test_an_image_part_without_a_url_is_an_image_error() -> None:
    # (Images themselves: tests/test_client_images.py.)
    with pytest.raises(ImageError, match=r"messages\[0\].content\[0\] is an image_url part without a URL"):
        Client(base_url="http://127.0.0.1:9").chat.completions.create(
            model="", messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]
        )


def test_harmless_parameters_are_accepted(echo_server: BackgroundServer) -> None:
    answer = Client(base_url=echo_server.base_url).chat.completions.create(
        model="", messages=[{"role": "user", "content": "hi"}], temperature=0.2,
        max_tokens=5, top_p=1, stop=["x"], n=1, seed=3, user="me", tool_choice="none",
        timeout=30,
    )
    assert answer.choices[0].message.content.endswith("hi")  # type: ignore[union-attr]


def test_errors_raise_at_create_even_when_streaming(pair: tuple[BackgroundServer, BackgroundServer]) -> None:
    upstream, _ = pair
    client = Client(base_url=upstream.base_url, secret_key=SECRET, password="wrong")
    with pytest.raises(InvalidPasswordError):
        client.chat.completions.create(model="", messages=CONVERSATION, stream=True)
    with pytest.raises(ConnectError):
        Client(base_url="http://127.0.0.1:9").chat.completions.create(
            model="", messages=CONVERSATION, stream=True
        )


async def test_sync_client_works_inside_a_running_loop(echo_server: BackgroundServer) -> None:
    # This coroutine runs in the event loop's thread, as a Jupyter cell does.
    client = Client(base_url=echo_server.base_url)
    answer = client.chat.completions.create(model="", messages=[{"role": "user", "content": "loop"}])
    assert answer.choices[0].message.content.endswith("loop")  # type: ignore[union-attr]
    with client.chat.completions.create(
        model="", messages=[{"role": "user", "content": "a b c d e f"}], stream=True
    ) as stream:
        first = next(stream)
    assert first.choices[0].delta.role == "assistant"


async def test_async_stream_closed_early_releases_connection(make_server: ServerFactory) -> None:
    server = make_server(backend_options={"delay": 0.02, "repeat": 200})
    client = AsyncClient(base_url=server.base_url)
    stream = await client.chat.completions.create(
        model="", messages=[{"role": "user", "content": "long answer "}], stream=True
    )
    async for chunk in stream:
        if chunk.choices[0].delta.content:
            break
    await stream.close()
    with pytest.raises(StopAsyncIteration):
        await stream.__anext__()
    await asyncio.sleep(0)


def test_public_names() -> None:
    assert {"Client", "AsyncClient", "InvalidParameterError", "UnsupportedParameterError"} <= set(
        gprochat.__all__
    )
    for name in gprochat.__all__:
        assert hasattr(gprochat, name), name
