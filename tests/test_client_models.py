"""The OpenAI-style client and a router of models: ``model=`` names one the server offers."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from gprochat import AsyncClient, Client, ModelNotSupportedError
from gprochat.server import BackgroundServer, ServerConfig
from gprochat.server.backends.echo import EchoBackend

from .conftest import ServerFactory
from .routers import TWO_ECHO_MODELS, clear_client_caches
from .scripted import RecordedRequest, ScriptedServer, full_response

HELLO = [{"role": "user", "content": "Hello!"}]
ROUTER = TWO_ECHO_MODELS


@pytest.fixture(autouse=True)
def fresh_caches() -> Iterator[None]:
    clear_client_caches()
    yield
    clear_client_caches()


@pytest.fixture
def routed(make_server: ServerFactory) -> BackgroundServer:
    return make_server(ServerConfig(router=ROUTER))


def test_create_names_a_router_model_and_reports_it(routed: BackgroundServer) -> None:
    client = Client(base_url=routed.base_url)
    completion = client.chat.completions.create(model="alpha", messages=HELLO)
    assert completion.model == "alpha"
    assert completion.choices[0].message.content == EchoBackend.PREFIX + "Hello!"
    chunks = list(client.chat.completions.create(model="beta", messages=HELLO, stream=True))
    assert {chunk.model for chunk in chunks} == {"beta"}
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == \
        EchoBackend.PREFIX + "Hello!" * 2


def test_models_list_and_retrieve_show_what_the_router_offers(routed: BackgroundServer) -> None:
    client = Client(base_url=routed.base_url)
    assert [m.id for m in client.models.list()] == ["gemini-1.5-pro", "beta", "alpha"]
    assert client.models.retrieve("alpha").id == "alpha"
    assert client.models.retrieve("gemini-pro").id == "gemini-1.5-pro"
    with pytest.raises(ModelNotSupportedError, match="it offers beta, alpha"):
        client.models.retrieve("gamma")
    with pytest.raises(ModelNotSupportedError, match="it offers beta, alpha"):
        client.chat.completions.create(model="gamma", messages=HELLO)


async def test_the_async_client_against_a_router_and_a_stock_server(routed: BackgroundServer) -> None:
    async def stock(request: RecordedRequest, writer: asyncio.StreamWriter) -> None:
        writer.write(full_response(404, b"Not Found"))

    completion = await AsyncClient(base_url=routed.base_url).chat.completions.create(
        model="alpha", messages=HELLO)
    assert completion.choices[0].message.content == EchoBackend.PREFIX + "Hello!"
    async with ScriptedServer(stock) as server:
        client = AsyncClient(base_url=server.base_url)
        assert [m.id for m in (await client.models.list()).data] == ["gemini-1.5-pro"]
        with pytest.raises(ModelNotSupportedError, match="no /api/models"):
            await client.chat.completions.create(model="alpha", messages=HELLO)
        assert [r.path for r in server.requests] == ["/api/models"]  # asked once, nothing posted

