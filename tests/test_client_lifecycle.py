"""``Client`` / ``AsyncClient`` as openai-python's users expect: close, with, with_options,
to_dict / to_json, and a missing ``model`` — each compared with the real SDK where it has one."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletion as SDKChatCompletion
from openai.types.chat import ChatCompletionChunk as SDKChatCompletionChunk

from gprochat import AsyncClient, Client
from gprochat.errors import ConfigurationError, InvalidPasswordError

from .conftest import ServerFactory
from .scripted import LAST_CHUNK, RecordedRequest, ScriptedServer, chunk, head

HI = [{"role": "user", "content": "Hi"}]


async def keep_alive(request: RecordedRequest, writer: asyncio.StreamWriter) -> None:
    writer.write(head() + chunk(b"pooled") + LAST_CHUNK)


async def _wait_for(condition, seconds: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    for _ in range(int(seconds / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)


async def test_async_client_close_and_context_manager_release_the_connections() -> None:
    async with ScriptedServer(keep_alive) as server:
        async with AsyncClient(base_url=server.base_url) as client:
            answer = await client.chat.completions.create(model="", messages=HI)
            assert answer.choices[0].message.content == "pooled"
            await client.chat.completions.create(model="", messages=HI)
            assert server.connections == 1 and server.disconnects == 0  # kept alive, reused
        await _wait_for(lambda: server.disconnects == 1)
        assert server.disconnects == 1  # closed by leaving the ``async with``

        client = AsyncClient(base_url=server.base_url)
        await client.chat.completions.create(model="", messages=HI)
        await client.aclose()
        await _wait_for(lambda: server.disconnects == 2)
        assert server.disconnects == 2
        # Usable again afterwards: a new connection is opened.
        assert (await client.chat.completions.create(model="", messages=HI)).choices[0].message.content
        await client.close()


async def test_sync_client_close_and_context_manager_release_the_connections() -> None:
    async with ScriptedServer(keep_alive) as server:
        def use() -> None:
            with Client(base_url=server.base_url) as client:
                client.chat.completions.create(model="", messages=HI)
                client.chat.completions.create(model="", messages=HI)

        await asyncio.to_thread(use)
        await _wait_for(lambda: server.disconnects == 1)
        assert server.connections == 1 and server.disconnects == 1

        client = Client(base_url=server.base_url)
        await asyncio.to_thread(client.chat.completions.create, model="", messages=HI)
        await asyncio.to_thread(client.close)
        await _wait_for(lambda: server.disconnects == 2)
        assert server.disconnects == 2


def test_with_options_changes_only_what_it_is_given(make_server: ServerFactory) -> None:
    server = make_server(secret_key="s", passwords=("right",))
    client = Client(base_url=server.base_url, secret_key="s", password="wrong", max_retries=0)
    with pytest.raises(InvalidPasswordError):
        client.chat.completions.create(model="", messages=HI)
    fixed = client.with_options(password="right")
    assert type(fixed) is Client and fixed is not client
    assert fixed.chat.completions.create(model="", messages=HI).choices[0].message.content
    with pytest.raises(InvalidPasswordError):  # the original is unchanged
        client.chat.completions.create(model="", messages=HI)
    assert isinstance(AsyncClient().with_options(timeout=3), AsyncClient)
    with pytest.raises(TypeError, match=r"unknown setting.*api_kee"):
        client.with_options(api_kee="x")
    # openai-python has the same method, also under the name copy().
    sdk = openai.OpenAI(api_key="x", base_url=server.base_url)
    assert sdk.with_options(max_retries=0).max_retries == 0
    assert client.copy(password="right").chat.completions.create(model="", messages=HI)


def test_to_dict_and_to_json_match_the_sdk(make_server: ServerFactory) -> None:
    server = make_server()
    client = Client(base_url=server.base_url)
    answer = client.chat.completions.create(model="", messages=HI)
    as_dict = answer.to_dict()
    assert as_dict["object"] == "chat.completion"
    assert as_dict["choices"][0]["message"]["content"].endswith(": Hi")
    assert json.loads(answer.to_json()) == as_dict
    assert "\n" not in answer.to_json(indent=None)
    assert "refusal" not in answer.to_dict(exclude_none=True)["choices"][0]["message"]
    # The SDK reads our dict back into its own type, and writes the same dict.
    theirs = SDKChatCompletion.model_validate(as_dict)
    assert theirs.to_dict() == as_dict
    assert json.loads(theirs.to_json()) == json.loads(answer.to_json())

    chunks = list(client.chat.completions.create(model="", messages=HI, stream=True))
    for ours in chunks:
        assert SDKChatCompletionChunk.model_validate(ours.to_dict()).to_dict() == ours.to_dict()
    assert client.models.list().to_dict()["data"][0]["id"] == "gemini-1.5-pro"


async def test_a_missing_model_is_a_type_error_as_in_the_sdk(make_server: ServerFactory) -> None:
    server = make_server()
    sdk = openai.OpenAI(api_key="x", base_url=server.base_url + "/v1", max_retries=0)
    with pytest.raises(TypeError, match="Missing required argument"):
        sdk.chat.completions.create(messages=HI)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="Missing required argument 'model'"):
        Client(base_url=server.base_url).chat.completions.create(messages=HI)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="Missing required argument 'model'"):
        await AsyncClient(base_url=server.base_url).chat.completions.create(messages=HI)  # type: ignore[call-overload]
    # model="" still means the deployment's default, as documented.
    assert Client(base_url=server.base_url).chat.completions.create(model="", messages=HI).model


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"base_url": "localhost:8000"}, "base_url='localhost:8000' is not an http:// or https:// URL"),
        ({"timeout": "soon"}, "timeout='soon' is invalid"),
        ({"max_retries": -1}, "max_retries=-1 is invalid"),
        ({"proxy": "ftp://127.0.0.1:21"}, "proxy='ftp://127.0.0.1:21' is not a proxy URL"),
    ],
)
def test_a_bad_setting_fails_where_the_client_is_built(settings: dict[str, Any], message: str) -> None:
    """As the SDK's constructor does, not at some later call (nor with_options' copy)."""
    for client_class in (Client, AsyncClient):
        with pytest.raises(ConfigurationError, match=re.escape(message)):
            client_class(**settings)
        with pytest.raises(ConfigurationError, match=re.escape(message)):
            client_class(base_url="http://127.0.0.1:8000").with_options(**settings)
