"""Router models from the provider: a name beyond the stock ones is asked of the deployment.

Our server with a router of two echo models (``beta``, the default, repeats the message
twice, so the answer shows which model answered), a scripted gprochat-like server that
records what it is sent, and a scripted stock GeminiProChat server without /api/models.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from gprochat import (
    AllDeploymentsFailedError,
    AuthenticationError,
    Deployment,
    GPROChat,
    ModelNotSupportedError,
)
from gprochat.protocol import generate_signature
from gprochat.providers import AnsweredBy, _models
from gprochat.providers._models import clear_offered_models
from gprochat.server import BackgroundServer, ServerConfig
from gprochat.server.backends.echo import EchoBackend

from ..conftest import ServerFactory
from ..routers import TWO_ECHO_MODELS, clear_client_caches
from ..scripted import LAST_CHUNK, RecordedRequest, ScriptedServer, chunk, closed_url, full_response, head

HELLO = [{"role": "user", "content": "Hello!"}]
PASSWORD = "site-password"
ROUTER = TWO_ECHO_MODELS


def echoed(text: str, times: int = 1) -> str:
    return EchoBackend.PREFIX + text * times


@pytest.fixture(autouse=True)
def fresh_caches() -> Iterator[None]:
    clear_client_caches()
    yield
    clear_client_caches()


@pytest.fixture
def routed(make_server: ServerFactory) -> BackgroundServer:
    return make_server(ServerConfig(router=ROUTER))


async def stock(request: RecordedRequest, writer: asyncio.StreamWriter) -> None:
    """A GeminiProChat server: no /api/models, one model, any other field ignored."""
    if request.path != "/api/generate":
        writer.write(full_response(404, b"Not Found"))
        return
    writer.write(head() + chunk(b"from the stock server") + LAST_CHUNK)


async def offering(request: RecordedRequest, writer: asyncio.StreamWriter) -> None:
    """A gprochat-like server offering ``main`` and ``fast``."""
    if request.method == "GET" and request.path == "/api/models":
        body = json.dumps({"models": ["main", "fast"], "default": "main"}).encode()
        writer.write(full_response(200, body, {"Content-Type": "application/json"}))
        return
    writer.write(head() + chunk(b"answered") + LAST_CHUNK)


# -- one deployment -------------------------------------------------------------------------


async def test_a_router_model_is_chosen_by_name(routed: BackgroundServer) -> None:
    answered: list[AnsweredBy] = []
    alpha = await GPROChat.create_async("alpha", HELLO, base_url=routed.base_url,
                                        on_answer=answered.append)
    beta = await GPROChat.create_async("beta", HELLO, base_url=routed.base_url)
    default = await GPROChat.create_async("", HELLO, base_url=routed.base_url)
    assert (alpha, beta, default) == (echoed("Hello!"), echoed("Hello!", 2), echoed("Hello!", 2))
    assert answered == [AnsweredBy(routed.base_url, "alpha")]
    chunks = [c async for c in GPROChat.create_async_generator("alpha", HELLO, base_url=routed.base_url)]
    assert "".join(chunks) == echoed("Hello!")


async def test_the_lookup_is_made_once_and_the_request_carries_the_model() -> None:
    async with ScriptedServer(offering) as server:
        for _ in range(2):
            assert await GPROChat.create_async("fast", HELLO, base_url=server.base_url) == "answered"
        assert [(r.method, r.path) for r in server.requests] == [
            ("GET", "/api/models"), ("POST", "/api/generate"), ("POST", "/api/generate")]
        body = server.requests[1].json()
        assert body["model"] == "fast"
        # The signature covers time and text only, as the seed's: the field does not change it.
        assert body["sign"] == generate_signature(body["time"], "Hello!", GPROChat.secret_key)
        assert "authorization" not in server.requests[0].headers


async def test_a_kept_list_is_asked_again_for_a_name_it_lacks_and_after_five_minutes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    offered = ["main", "fast"]

    async def growing(request: RecordedRequest, writer: asyncio.StreamWriter) -> None:
        if request.method == "GET" and request.path == "/api/models":
            body = json.dumps({"models": offered, "default": "main"}).encode()
            writer.write(full_response(200, body, {"Content-Type": "application/json"}))
            return
        writer.write(head() + chunk(request.json()["model"].encode()) + LAST_CHUNK)

    now = [1000.0]
    monkeypatch.setattr(_models, "_clock", lambda: now[0])
    async with ScriptedServer(growing) as server:
        assert await GPROChat.create_async("fast", HELLO, base_url=server.base_url) == "fast"
        # The operator adds a model: a name the kept list lacks is asked for again at once.
        offered.append("new")
        assert await GPROChat.create_async("new", HELLO, base_url=server.base_url) == "new"
        # ...and a name it holds is not, until the list is five minutes old.
        offered.remove("fast")
        assert await GPROChat.create_async("fast", HELLO, base_url=server.base_url) == "fast"
        now[0] += _models.OFFERED_MODELS_TTL
        with pytest.raises(ModelNotSupportedError, match="it offers main, new"):
            await GPROChat.create_async("fast", HELLO, base_url=server.base_url)
        assert [(r.method, r.path) for r in server.requests] == [
            ("GET", "/api/models"), ("POST", "/api/generate"),
            ("GET", "/api/models"), ("POST", "/api/generate"),
            ("POST", "/api/generate"),
            ("GET", "/api/models")]


async def test_the_stock_names_make_no_lookup_and_send_no_model() -> None:
    async with ScriptedServer(offering) as server:
        for name in ("", "gemini-1.5-pro", "gemini-pro"):
            assert await GPROChat.create_async(name, HELLO, base_url=server.base_url) == "answered"
        assert [(r.method, r.path) for r in server.requests] == [("POST", "/api/generate")] * 3
        assert all("model" not in r.json() for r in server.requests)


async def test_a_stock_server_refuses_other_names_before_any_prompt_is_sent() -> None:
    async with ScriptedServer(stock) as server:
        for _ in range(2):
            with pytest.raises(ModelNotSupportedError) as info:
                await GPROChat.create_async("fast", HELLO, base_url=server.base_url)
            message = str(info.value)
            assert "'fast' is not offered by " + server.base_url in message
            assert "no /api/models" in message and "gemini-1.5-pro, gemini-pro" in message
        # Asked once (the 404 is remembered); the prompt never went.
        assert [(r.method, r.path) for r in server.requests] == [("GET", "/api/models")]
        assert await GPROChat.create_async("", HELLO, base_url=server.base_url) == "from the stock server"


async def test_an_unknown_name_names_what_the_router_offers(routed: BackgroundServer) -> None:
    with pytest.raises(ModelNotSupportedError) as info:
        await GPROChat.create_async("gamma", HELLO, base_url=routed.base_url)
    assert "it offers beta, alpha" in str(info.value)
    assert info.value.supported == ["gemini-1.5-pro", "gemini-pro", "beta", "alpha"]


async def test_a_locked_router_is_asked_with_the_password(make_server: ServerFactory) -> None:
    server = make_server(ServerConfig(router=ROUTER, passwords=(PASSWORD,)))
    text = await GPROChat.create_async("alpha", HELLO, base_url=server.base_url, password=PASSWORD)
    assert text == echoed("Hello!")
    clear_offered_models()
    with pytest.raises(AuthenticationError, match="password"):
        await GPROChat.create_async("alpha", HELLO, base_url=server.base_url)


# -- several deployments --------------------------------------------------------------------


async def test_failover_skips_a_deployment_that_does_not_offer_the_model(routed: BackgroundServer) -> None:
    async with ScriptedServer(stock) as server:
        listed = [Deployment(server.base_url), Deployment(routed.base_url)]
        answered: list[AnsweredBy] = []
        text = await GPROChat.create_async("alpha", HELLO, deployments=listed, on_answer=answered.append)
        assert text == echoed("Hello!")
        assert [a.base_url for a in answered] == [routed.base_url]
        assert [(r.method, r.path) for r in server.requests] == [("GET", "/api/models")]
        # The stock names still go to the first deployment, with no lookup.
        assert await GPROChat.create_async("", HELLO, deployments=listed) == "from the stock server"


async def test_when_no_deployment_offers_the_model_the_error_says_why_for_each(
    routed: BackgroundServer,
) -> None:
    async with ScriptedServer(stock) as server:
        listed = [Deployment(server.base_url), Deployment(routed.base_url)]
        with pytest.raises(ModelNotSupportedError) as info:
            await GPROChat.create_async("gamma", HELLO, deployments=listed)
        message = str(info.value)
        assert f"{server.base_url}: it offers no other models" in message
        assert f"{routed.base_url}: it offers beta, alpha" in message
        assert message.index(server.base_url) < message.index(routed.base_url)
        assert "the stock names are gemini-1.5-pro, gemini-pro" in message
        assert all(r.method == "GET" for r in server.requests)


async def test_a_dead_deployment_and_one_without_the_model_fail_together(routed: BackgroundServer) -> None:
    dead = closed_url()
    listed = [Deployment(dead), Deployment(routed.base_url)]
    with pytest.raises(AllDeploymentsFailedError) as info:
        await GPROChat.create_async("gamma", HELLO, deployments=listed, max_retries=0)
    reasons = {url: why for url, why, _ in info.value.failures}
    assert reasons[dead].startswith("cannot connect")
    assert reasons[routed.base_url] == "it offers beta, alpha"


def test_the_synchronous_api_chooses_the_model_too(routed: BackgroundServer) -> None:
    assert GPROChat.create("alpha", HELLO, base_url=routed.base_url) == echoed("Hello!")
    assert "".join(GPROChat.create_completion("beta", HELLO, base_url=routed.base_url)) == echoed("Hello!", 2)
