"""The original g4f provider (g4f 0.4.0.0) works against our server unchanged."""

import aiohttp
import pytest

from gprochat.server.backends import EchoBackend

from .conftest import ServerFactory

g4f_gprochat = pytest.importorskip("g4f.Provider.not_working.GPROChat")


def original_provider(base_url: str) -> type:
    class Pointed(g4f_gprochat.GPROChat):  # type: ignore[name-defined,misc]
        api_endpoint = base_url + "/api/generate"

    return Pointed


async def test_original_provider_streams_from_our_server(make_server: ServerFactory) -> None:
    server = make_server(backend=EchoBackend(delay=0.02))
    provider = original_provider(server.base_url)
    messages = [{"role": "user", "content": "Hello from g4f"}]
    chunks = [chunk async for chunk in provider.create_async_generator("gemini-pro", messages)]
    assert len(chunks) > 1
    assert "".join(chunks).endswith("Hello from g4f")


async def test_original_provider_fails_with_401_on_a_wrong_secret(make_server: ServerFactory) -> None:
    server = make_server(secret_key="not-gprochat-com")
    provider = original_provider(server.base_url)
    with pytest.raises(aiohttp.ClientResponseError) as info:
        async for _ in provider.create_async_generator("gemini-pro", [{"role": "user", "content": "x"}]):
            pass
    assert info.value.status == 401
