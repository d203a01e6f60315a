"""One front door: every route behind one guard, locked when the site is locked, no 500.

Raw requests over real sockets; the lock is proved with the real ``openai`` SDK.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import openai
import pytest

from gprochat.errors import BackendError
from gprochat.server import BackgroundServer, ServerConfig
from gprochat.server.backends import Backend, Conversation
from gprochat.server.gateway import gateway_warning

from ..conftest import ServerFactory
from .helpers import error_message, http_request, raw_exchange, signed

SECRET, PASSWORD, API_KEY = "site-secret", "site-password", "sk-gateway-key"
HELLO = [{"role": "user", "content": "Hello"}]


def chat_body(**extra: object) -> bytes:
    return json.dumps({"model": "echo", "messages": HELLO, **extra}).encode()


def openai_error(raw: bytes) -> dict[str, object]:
    """OpenAI's error shape, all four keys; fails the test on any other shape."""
    data = json.loads(raw)
    assert set(data) == {"error"}, data
    assert set(data["error"]) == {"message", "type", "param", "code"}, data
    return dict(data["error"])


def sdk(server: BackgroundServer, key: str) -> openai.OpenAI:
    """The SDK's client; use it in a ``with`` block, which closes its kept-alive connections."""
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=key, max_retries=0, timeout=30)


# A locked site is locked on every route.


@pytest.fixture
def locked(make_server: ServerFactory) -> BackgroundServer:
    """What ``gprochat serve --secret-key K --password P`` builds: no --api-key."""
    return make_server(ServerConfig(secret_key=SECRET, passwords=(PASSWORD,)))


def test_locked_site_refuses_the_sdk_without_a_key(locked: BackgroundServer) -> None:
    # The SDK insists on some key; an empty Authorization is what a keyless client sends.
    with openai.OpenAI(base_url=f"{locked.base_url}/v1", api_key="unused", max_retries=0,
                       timeout=30, default_headers={"Authorization": ""}) as client:
        with pytest.raises(openai.AuthenticationError) as caught:
            client.chat.completions.create(model="echo", messages=HELLO)  # type: ignore[arg-type]
        assert "Missing API key" in caught.value.message
        with pytest.raises(openai.AuthenticationError):
            client.models.list()


def test_locked_site_refuses_a_wrong_key(locked: BackgroundServer) -> None:
    with sdk(locked, "not-the-password") as client, pytest.raises(openai.AuthenticationError) as caught:
        client.chat.completions.create(model="echo", messages=HELLO)  # type: ignore[arg-type]
    assert caught.value.code == "invalid_api_key"


def test_locked_site_takes_its_password_as_the_key(locked: BackgroundServer) -> None:
    with sdk(locked, PASSWORD) as client:
        completion = client.chat.completions.create(model="echo", messages=HELLO)  # type: ignore[arg-type]
        assert completion.choices[0].message.content.endswith("Hello")  # type: ignore[union-attr]
        assert [model.id for model in client.models.list()] == ["echo"]


def test_api_key_and_password_both_open_the_gateway(make_server: ServerFactory) -> None:
    server = make_server(ServerConfig(passwords=(PASSWORD,), api_keys=(API_KEY,)))
    for key in (API_KEY, PASSWORD):
        with sdk(server, key) as client:
            completion = client.chat.completions.create(model="echo", messages=HELLO)  # type: ignore[arg-type]
        assert completion.choices[0].message.content.endswith("Hello")  # type: ignore[union-attr]
    with sdk(server, "sk-wrong") as client, pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="echo", messages=HELLO)  # type: ignore[arg-type]


def test_open_gateway_on_a_public_address_is_warned_about() -> None:
    open_config = ServerConfig()
    warning = gateway_warning(open_config, "0.0.0.0")
    assert warning is not None and "--api-key" in warning and "/v1" in warning
    assert gateway_warning(open_config, "::") is not None
    for host in ("127.0.0.1", "::1", "localhost"):
        assert gateway_warning(open_config, host) is None
    assert gateway_warning(ServerConfig(api_keys=("k",)), "0.0.0.0") is None
    assert gateway_warning(ServerConfig(passwords=("p",)), "0.0.0.0") is None
    assert gateway_warning(ServerConfig(gateway=False), "0.0.0.0") is None


# The gateway passes the same limits as /api/generate.


async def test_chunked_body_over_the_limit_is_413_on_the_gateway(make_server: ServerFactory) -> None:
    server = make_server(ServerConfig(max_body_bytes=1000, max_message_chars=0))
    body = chat_body(messages=[{"role": "user", "content": "x" * 5000}])
    request = http_request("POST", "/v1/chat/completions", body,
                           {"Content-Type": "application/json"}, chunked=True)
    status, _, raw = await raw_exchange(server.base_url, request)
    assert status == 413
    assert openai_error(raw)["code"] == "request_too_large"
    # And on /api/generate, the same guard.
    request = http_request("POST", "/api/generate", json.dumps(signed("x" * 5000)).encode(),
                           chunked=True)
    status, _, raw = await raw_exchange(server.base_url, request)
    assert status == 413 and "at most 1000" in error_message(raw)


async def test_conversation_limits_apply_to_the_gateway(make_server: ServerFactory) -> None:
    server = make_server(ServerConfig(max_messages=3, max_message_chars=10))
    many = [{"role": "user", "content": "hi"}] * 4
    status, _, raw = await raw_exchange(server.base_url, http_request(
        "POST", "/v1/chat/completions", chat_body(messages=many), {"Content-Type": "application/json"}))
    assert status == 413 and "Too many messages: 4" in str(openai_error(raw)["message"])
    long = [{"role": "user", "content": "x" * 11}]
    status, _, raw = await raw_exchange(server.base_url, http_request(
        "POST", "/v1/chat/completions", chat_body(messages=long), {"Content-Type": "application/json"}))
    assert status == 413 and "messages[0] has 11 characters" in str(openai_error(raw)["message"])


async def test_rate_budgets_are_separate_per_route(make_server: ServerFactory) -> None:
    server = make_server(ServerConfig(rate_limit="1/minute"))
    gateway = http_request("POST", "/v1/chat/completions", chat_body(),
                           {"Content-Type": "application/json"})
    assert (await raw_exchange(server.base_url, gateway))[0] == 200
    assert (await raw_exchange(server.base_url, gateway))[0] == 429
    # The gateway's spent budget leaves /api/generate's and /api/auth's alone.
    generate = http_request("POST", "/api/generate", json.dumps(signed()).encode())
    assert (await raw_exchange(server.base_url, generate))[0] == 200
    auth = http_request("POST", "/api/auth", b'{"pass": ""}')
    assert (await raw_exchange(server.base_url, auth))[0] == 200
    assert (await raw_exchange(server.base_url, auth))[0] == 429


# One failure map: a backend failure is answered alike on both routes.


class FailingBackend(Backend):
    name = "failing"

    def __init__(self, error: BaseException) -> None:
        self.error = error

    async def stream(self, conversation: Conversation) -> AsyncIterator[str]:
        raise self.error
        yield ""  # pragma: no cover - makes this an async generator


@pytest.mark.parametrize(
    ("error", "status", "retry_after"),
    [
        (BackendError("upstream says: invalid key", status=401), 502, None),
        (BackendError("slow down", status=429, retry_after=2.5), 429, "3"),
        (BackendError("timed out", status=504), 504, None),
        (RuntimeError("a bug at /srv/secret/path"), 500, None),
    ],
)
async def test_a_backend_failure_is_answered_alike_on_both_routes(
    make_server: ServerFactory, error: BaseException, status: int, retry_after: str | None
) -> None:
    server = make_server(backend=FailingBackend(error))
    generate = await raw_exchange(server.base_url, http_request(
        "POST", "/api/generate", json.dumps(signed()).encode()))
    gateway = await raw_exchange(server.base_url, http_request(
        "POST", "/v1/chat/completions", chat_body(model="failing"),
        {"Content-Type": "application/json"}))
    assert generate[0] == gateway[0] == status
    assert generate[1].get("retry-after") == gateway[1].get("retry-after") == retry_after
    assert error_message(generate[2]) == openai_error(gateway[2])["message"]
    assert "/srv/secret" not in error_message(generate[2])
    if status == 502:
        # Not 401: the OpenAI SDK would tell the user that *their* key is wrong.
        assert openai_error(gateway[2])["code"] == "upstream_auth_failed"
        assert "invalid key" not in error_message(generate[2])


# No 500 for any input: a 400 naming the problem.

DEEP = b'{"messages": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"


def _generate_with(text: str = "Hi", **fields: object) -> bytes:
    body = signed(text)
    body.update(fields)
    return json.dumps(body).encode()


HOSTILE_GENERATE = {
    "lone surrogate in a message": (
        json.dumps(signed("x")).replace('"x"', '"\\ud800"').encode(), "surrogate"),
    "lone surrogate in pass": (_generate_with().replace(b'"pass": null', b'"pass": "\\udfff"'),
                               "surrogate"),
    "JSON nested 10,000 deep": (DEEP, "nested too deeply"),
    "an integer of 5,000 digits": (_generate_with().replace(b'"time": ', b'"time": ' + b"9" * 5000),
                                   "digits"),
    "time = 1e400": (_generate_with(time=0).replace(b'"time": 0', b'"time": 1e400'),
                     "too large"),
    "NaN": (_generate_with(time=0).replace(b'"time": 0', b'"time": NaN'), "NaN"),
    "Infinity": (_generate_with(time=0).replace(b'"time": 0', b'"time": -Infinity'), "Infinity"),
}


@pytest.mark.parametrize("name", list(HOSTILE_GENERATE))
async def test_hostile_json_on_generate_is_a_400_naming_it(
    echo_server: BackgroundServer, name: str
) -> None:
    body, says = HOSTILE_GENERATE[name]
    status, _, raw = await raw_exchange(echo_server.base_url, http_request("POST", "/api/generate", body))
    assert status == 400, raw
    assert says in error_message(raw)


@pytest.mark.parametrize(
    ("body", "says"),
    [(b'{"pass": "\\ud800"}', "surrogate"), (DEEP, "nested too deeply"),
     (b'{"pass": NaN}', "NaN"), (b'{"pass": ' + b"1" * 5000 + b"}", "digits")],
)
async def test_hostile_json_on_auth_is_a_400_naming_it(
    make_server: ServerFactory, body: bytes, says: str
) -> None:
    server = make_server(passwords=(PASSWORD,))
    status, _, raw = await raw_exchange(server.base_url, http_request("POST", "/api/auth", body))
    assert status == 400, raw
    assert says in error_message(raw)


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (chat_body(messages=[{"role": "user", "content": "x"}]).replace(b'"x"', b'"\\ud800"'),
         "surrogate"),
        (DEEP, "nested too deeply"),
        (chat_body(temperature=0).replace(b'"temperature": 0', b'"temperature": 1e400'), "too large"),
        (chat_body(temperature=0).replace(b'"temperature": 0', b'"temperature": NaN'), "NaN"),
        (chat_body(seed=0).replace(b'"seed": 0', b'"seed": ' + b"7" * 5000), "digits"),
        (b"", "Empty request body"),
        (b"[1, 2]", "JSON object"),
    ],
)
async def test_hostile_json_on_the_gateway_is_a_400_naming_it(
    echo_server: BackgroundServer, body: bytes, says: str
) -> None:
    status, _, raw = await raw_exchange(echo_server.base_url, http_request(
        "POST", "/v1/chat/completions", body, {"Content-Type": "application/json"}))
    assert status == 400, raw
    error = openai_error(raw)
    assert error["type"] == "invalid_request_error" and says in str(error["message"])


async def test_surrogate_pairs_are_characters_not_errors(echo_server: BackgroundServer) -> None:
    # An emoji escaped as a pair (json.dumps' default) is fine: only lone halves are refused.
    body = json.dumps(signed("smile \U0001f600")).encode()
    assert b"\\ud83d\\ude00" in body
    status, _, raw = await raw_exchange(echo_server.base_url, http_request("POST", "/api/generate", body))
    assert status == 200 and raw.decode().endswith("smile \U0001f600")


# 404, 405 and HEAD in the documented shapes.


@pytest.mark.parametrize(
    ("method", "path", "status", "openai_shape"),
    [
        ("GET", "/nowhere", 404, False),
        ("GET", "/api/generate", 405, False),
        ("DELETE", "/api/auth", 405, False),
        ("GET", "/v1/nowhere", 404, True),
        ("GET", "/v1/chat/completions", 405, True),
    ],
)
async def test_404_and_405_answer_the_documented_error_shape(
    echo_server: BackgroundServer, method: str, path: str, status: int, openai_shape: bool
) -> None:
    got, headers, raw = await raw_exchange(echo_server.base_url, http_request(method, path))
    assert got == status
    assert "detail" not in json.loads(raw)
    message = str(openai_error(raw)["message"]) if openai_shape else error_message(raw)
    assert message
    if status == 405:
        assert "POST" in headers["allow"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/generate/"), ("POST", "/api/auth/"), ("GET", "/api/models/"),
        ("GET", "/healthz/"), ("GET", "/metrics/"), ("GET", "/openapi.json/"),
        ("POST", "/v1/chat/completions/"),
        # ("GET", "/v1/models/") is /v1/models/{model_id} with an empty id: the default
        # model, the gateway's choice.
    ],
)
async def test_a_trailing_slash_is_404_json_not_an_empty_redirect(
    echo_server: BackgroundServer, method: str, path: str
) -> None:
    body = json.dumps(signed("Hi")).encode() if method == "POST" else b""
    got, headers, raw = await raw_exchange(echo_server.base_url, http_request(method, path, body))
    assert got == 404, (got, headers, raw)
    assert "location" not in headers
    message = str(openai_error(raw)["message"]) if path.startswith("/v1/") else error_message(raw)
    assert message.startswith("Not found: no such path on this server")


@pytest.mark.parametrize("path", ["/healthz", "/metrics", "/v1/models", "/openapi.json"])
async def test_head_works_where_get_works(echo_server: BackgroundServer, path: str) -> None:
    status, headers, body = await raw_exchange(echo_server.base_url, http_request("HEAD", path))
    assert status == 200 and body == b""
    assert int(headers["content-length"]) > 0
