"""Choosing the model on ``/api/generate``: ``GET /api/models`` and the body's ``model``.

A router over two echo models that answer differently (``beta`` repeats the message
twice), over real sockets: the answer shows which model answered.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from gprochat.protocol import MAX_MODEL_NAME_CHARS
from gprochat.server import BackgroundServer, ServerConfig
from gprochat.server.backends.echo import EchoBackend

from ..conftest import ServerFactory
from ..routers import TWO_ECHO_MODELS
from .helpers import error_message, post, signed

PASSWORD = "site-password"
ROUTER = TWO_ECHO_MODELS


def answer_of(text: str, times: int = 1) -> bytes:
    return (EchoBackend.PREFIX + text * times).encode()


async def get(base_url: str, path: str, headers: dict[str, str] | None = None
              ) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as session, \
            session.get(base_url + path, headers=headers or {}) as response:
        return response.status, dict(response.headers), await response.read()


def asking(text: str, **fields: Any) -> dict[str, Any]:
    """A signed body for ``text`` with our extra fields (``model``) added."""
    return {**signed(text, password=fields.pop("password", None)), **fields}


@pytest.fixture
def routed(make_server: ServerFactory) -> BackgroundServer:
    return make_server(ServerConfig(router=ROUTER))


async def test_api_models_lists_the_models_with_the_default_first(routed: BackgroundServer) -> None:
    status, headers, raw = await get(routed.base_url, "/api/models")
    assert status == 200
    assert json.loads(raw) == {"models": ["beta", "alpha"], "default": "beta"}
    assert headers["Cache-Control"] == "no-store"


async def test_a_single_backend_lists_its_one_model(echo_server: BackgroundServer) -> None:
    status, _, raw = await get(echo_server.base_url, "/api/models")
    assert (status, json.loads(raw)) == (200, {"models": ["echo"], "default": "echo"})


async def test_the_model_field_chooses_the_model_and_its_absence_the_default(
    routed: BackgroundServer,
) -> None:
    status, _, raw = await post(routed.base_url, asking("Hi A", model="alpha"))
    assert (status, raw) == (200, answer_of("Hi A"))
    status, _, raw = await post(routed.base_url, asking("Hi B", model="beta"))
    assert (status, raw) == (200, answer_of("Hi B", 2))
    for body in (signed("Hi default"), asking("Hi default", model=""),
                 asking("Hi default", model=None)):
        status, _, raw = await post(routed.base_url, body)
        assert (status, raw) == (200, answer_of("Hi default", 2))


async def test_an_unknown_model_is_a_400_naming_the_models(routed: BackgroundServer) -> None:
    status, _, raw = await post(routed.base_url, asking("Hi", model="gamma"))
    assert status == 400
    assert error_message(raw) == (
        "Unknown model 'gamma': this server offers beta, alpha (GET /api/models lists them); "
        'leave "model" out for the default (beta).'
    )


async def test_a_single_backend_takes_its_own_name_and_refuses_others(
    echo_server: BackgroundServer,
) -> None:
    status, _, raw = await post(echo_server.base_url, asking("Hi", model="echo"))
    assert (status, raw) == (200, answer_of("Hi"))
    status, _, raw = await post(echo_server.base_url, asking("Hi", model="gemini-1.5-pro"))
    assert status == 400 and "this server offers echo" in error_message(raw)


@pytest.mark.parametrize(("model", "expected"), [
    (7, "Invalid field 'model': Input should be a valid string."),
    ("m" * (MAX_MODEL_NAME_CHARS + 1),
     f"Invalid field 'model': String should have at most {MAX_MODEL_NAME_CHARS} characters."),
])
async def test_a_malformed_model_field_is_a_400_naming_it(
    routed: BackgroundServer, model: Any, expected: str
) -> None:
    status, _, raw = await post(routed.base_url, asking("Hi", model=model))
    assert (status, error_message(raw)) == (400, expected)


# A locked site names its models to no one without the password.


@pytest.fixture
def locked(make_server: ServerFactory) -> BackgroundServer:
    return make_server(ServerConfig(router=ROUTER, passwords=(PASSWORD,)))


@pytest.mark.parametrize("headers", [
    {}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {PASSWORD}"},
    {"Authorization": "Bearer "},
])
async def test_a_locked_site_lists_no_models_without_its_password(
    locked: BackgroundServer, headers: dict[str, str]
) -> None:
    status, _, raw = await get(locked.base_url, "/api/models", headers)
    assert status == 401
    message = error_message(raw)
    assert "password" in message and "alpha" not in message and "beta" not in message


async def test_a_locked_site_lists_its_models_with_its_password(locked: BackgroundServer) -> None:
    status, _, raw = await get(locked.base_url, "/api/models", {"Authorization": f"Bearer {PASSWORD}"})
    assert (status, json.loads(raw)) == (200, {"models": ["beta", "alpha"], "default": "beta"})


async def test_a_locked_site_checks_the_password_before_the_model(locked: BackgroundServer) -> None:
    # An unknown model with a wrong password: the 401, never the 400 that names the models.
    status, _, raw = await post(locked.base_url, asking("Hi", model="gamma", password="wrong"))
    assert (status, error_message(raw)) == (401, "Invalid password.")
    status, _, raw = await post(locked.base_url, asking("Hi", model="gamma", password=PASSWORD))
    assert status == 400 and "beta, alpha" in error_message(raw)
    status, _, raw = await post(locked.base_url, asking("Hi", model="alpha", password=PASSWORD))
    assert (status, raw) == (200, answer_of("Hi"))


async def test_api_models_spends_the_auth_budget(make_server: ServerFactory) -> None:
    # Both answer whether a password is right: guesses through either count once.
    server = make_server(ServerConfig(router=ROUTER, passwords=(PASSWORD,), rate_limit="2/minute"))
    status, _, _ = await post(server.base_url, {"pass": "guess"}, path="/api/auth")
    assert status == 200
    status, _, _ = await get(server.base_url, "/api/models", {"Authorization": "Bearer guess"})
    assert status == 401
    status, headers, _ = await get(server.base_url, "/api/models", {"Authorization": f"Bearer {PASSWORD}"})
    assert status == 429 and "Retry-After" in headers
    # /api/generate's budget is its own.
    status, _, _ = await post(server.base_url, asking("Hi", model="alpha", password=PASSWORD))
    assert status == 200


async def test_api_models_and_the_model_field_work_without_the_gateway(
    make_server: ServerFactory,
) -> None:
    server = make_server(ServerConfig(router=ROUTER, gateway=False))
    assert (await get(server.base_url, "/v1/models"))[0] == 404
    status, _, raw = await get(server.base_url, "/api/models")
    assert (status, json.loads(raw)["models"]) == (200, ["beta", "alpha"])
    status, _, raw = await post(server.base_url, asking("Hi", model="alpha"))
    assert (status, raw) == (200, answer_of("Hi"))
