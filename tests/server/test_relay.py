"""The gateway relaying to a second ``gprochat serve`` (the "remote deployment")."""

from __future__ import annotations

import openai
import pytest

from gprochat.server import BackgroundServer

from ..conftest import ServerFactory

SECRET, PASSWORD = "remote-secret-key", "remote-password"


@pytest.fixture
def remote(make_server: ServerFactory) -> BackgroundServer:
    return make_server(secret_key=SECRET, passwords=(PASSWORD,), backend_options={"delay": 0.005})


def sdk(server: BackgroundServer) -> openai.OpenAI:
    """The SDK's client; use it in a ``with`` block, which closes its kept-alive connections."""
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="gw-key", max_retries=0, timeout=30)


def test_relay_streams_end_to_end(make_server: ServerFactory, remote: BackgroundServer) -> None:
    gateway = make_server(
        api_keys=("gw-key",), relay_url=remote.base_url,
        relay_secret_key=SECRET, relay_password=PASSWORD,
    )
    with sdk(gateway) as client:
        assert [m.id for m in client.models.list()] == ["gemini-1.5-pro"]
        with client.chat.completions.create(
            model="gemini-pro", messages=[{"role": "user", "content": "relayed hello"}], stream=True
        ) as stream:
            chunks = list(stream)
        answer = client.chat.completions.create(
            model="gemini-1.5-pro", messages=[{"role": "user", "content": "and whole"}]
        )
    content = [c.choices[0].delta.content for c in chunks[1:-1]]
    assert len(content) > 1  # streamed through, not buffered into one piece
    assert "".join(content).endswith("relayed hello")
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert {c.model for c in chunks} == {"gemini-1.5-pro"}
    assert answer.choices[0].message.content.endswith("and whole")  # type: ignore[union-attr]


def test_relay_with_wrong_credentials_is_a_gateway_error(
    make_server: ServerFactory, remote: BackgroundServer
) -> None:
    gateway = make_server(relay_url=remote.base_url, relay_secret_key=SECRET, relay_password="nope")
    with sdk(gateway) as client, pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(
            model="gemini-1.5-pro", messages=[{"role": "user", "content": "x"}]
        )
    # Not 401: the caller's key was fine; the gateway's relay settings are wrong.
    assert caught.value.status_code == 502
    assert caught.value.code == "upstream_auth_failed"
    # The client is told it is the server's configuration, not given the client-side hint.
    assert "configuration error" in caught.value.message
    assert "--password" not in caught.value.message and "127.0.0.1" not in caught.value.message


def test_relay_to_nothing_is_502(make_server: ServerFactory) -> None:
    gateway = make_server(relay_url="http://127.0.0.1:9")
    with sdk(gateway) as client, pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(
            model="gemini-1.5-pro", messages=[{"role": "user", "content": "x"}], stream=True
        )
    assert caught.value.status_code == 502


def test_relay_refuses_unknown_models(make_server: ServerFactory, remote: BackgroundServer) -> None:
    gateway = make_server(relay_url=remote.base_url)
    with sdk(gateway) as client, pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "x"}])
