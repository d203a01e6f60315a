"""The real OpenAI SDK and LangChain's ChatOpenAI against ``gprochat serve``'s gateway."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import openai
import pytest
from langchain_openai import ChatOpenAI

from gprochat.errors import BackendError
from gprochat.server import BackgroundServer, ServerConfig, create_app
from gprochat.server.backends import EchoBackend, LocalBackend

from ..conftest import ServerFactory
from .backends.test_local import require_local_model
from .test_gateway import ScriptedBackend

KEY = "sk-test-gateway"
HELLO = [{"role": "user", "content": "Hello SDK"}]


@pytest.fixture
def gateway(make_server: ServerFactory) -> BackgroundServer:
    return make_server(api_keys=(KEY,))


def sdk(server: BackgroundServer, key: str = KEY) -> openai.OpenAI:
    """The SDK's client; use it in a ``with`` block, which closes its kept-alive connections
    (left to the garbage collector, they were reported as unclosed sockets in a later test)."""
    # No retries: a test must see the first answer, not a retried one.
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=key, max_retries=0, timeout=30)


def test_sdk_non_streamed(gateway: BackgroundServer) -> None:
    with sdk(gateway) as client:
        completion = client.chat.completions.create(model="echo", messages=HELLO)  # type: ignore[arg-type]
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content.endswith("Hello SDK")  # type: ignore[union-attr]
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.total_tokens > 0


def test_sdk_streamed(gateway: BackgroundServer) -> None:
    with sdk(gateway) as client, client.chat.completions.create(
        model="echo", messages=HELLO, stream=True, stream_options={"include_usage": True}  # type: ignore[arg-type]
    ) as stream:
        chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.endswith("Hello SDK")
    assert len(chunks) > 3
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


async def test_async_sdk_streamed(gateway: BackgroundServer) -> None:
    client = openai.AsyncOpenAI(base_url=f"{gateway.base_url}/v1", api_key=KEY, max_retries=0)
    async with client:
        stream = await client.chat.completions.create(model="echo", messages=HELLO, stream=True)  # type: ignore[arg-type]
        text = "".join([c.choices[0].delta.content or "" async for c in stream])
    assert text.endswith("Hello SDK")


def test_sdk_lists_and_retrieves_models(gateway: BackgroundServer) -> None:
    with sdk(gateway) as client:
        assert [m.id for m in client.models.list()] == ["echo"]
        assert client.models.retrieve("echo").owned_by == "gprochat"
        with pytest.raises(openai.NotFoundError):
            client.models.retrieve("gpt-4o")


def test_sdk_with_an_empty_model_gets_the_default(gateway: BackgroundServer) -> None:
    with sdk(gateway) as client:
        completion = client.chat.completions.create(model="", messages=HELLO)  # type: ignore[arg-type]
        assert completion.model == client.models.list().data[0].id == "echo"
        with client.chat.completions.create(model="", messages=HELLO, stream=True) as stream:  # type: ignore[arg-type]
            assert {chunk.model for chunk in stream} == {"echo"}


def test_the_local_model_answers_under_the_name_it_is_listed_by() -> None:
    require_local_model()
    backend = LocalBackend(temperature=0.0, parallel=1, queue=1, n_ctx=512, max_tokens=8)
    server = BackgroundServer(app=create_app(ServerConfig(rate_limit=None), backend=backend)).start()
    try:
        with sdk(server) as client:
            [listed] = [model.id for model in client.models.list()]
            for name in ("", listed):
                completion = client.chat.completions.create(
                    model=name, messages=HELLO, max_tokens=4  # type: ignore[arg-type]
                )
                assert completion.model == listed == "SmolLM2-135M-Instruct.Q4_1"
                assert completion.usage is not None and completion.usage.completion_tokens <= 4
    finally:
        server.stop()


def test_sdk_wrong_key_is_authentication_error(gateway: BackgroundServer) -> None:
    with sdk(gateway, key="sk-wrong") as client, pytest.raises(openai.AuthenticationError) as caught:
        client.chat.completions.create(model="echo", messages=HELLO)  # type: ignore[arg-type]
    assert caught.value.status_code == 401
    assert caught.value.code == "invalid_api_key"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"messages": []},
        {"messages": HELLO, "n": 2},
        {"messages": HELLO, "tools": [{"type": "function", "function": {"name": "f"}}]},
        {"messages": HELLO, "extra_body": {"not_a_param": True}},
        {"messages": [{"role": "assistant", "content": "no user turn"}]},
    ],
)
def test_sdk_malformed_request_is_bad_request(gateway: BackgroundServer, kwargs: dict) -> None:  # type: ignore[type-arg]
    with sdk(gateway) as client, pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="echo", **kwargs)
    assert caught.value.status_code == 400
    assert caught.value.param is not None


def test_sdk_unknown_model_is_not_found(gateway: BackgroundServer) -> None:
    with sdk(gateway) as client, pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4o", messages=HELLO)  # type: ignore[arg-type]


def test_sdk_rate_limit(make_server: ServerFactory) -> None:
    server = make_server(backend=ScriptedBackend([], BackendError("busy", status=429, retry_after=3)))
    with sdk(server) as client, pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="scripted", messages=HELLO)  # type: ignore[arg-type]
    assert caught.value.response.headers["retry-after"] == "3"


def test_sdk_sees_mid_stream_failure(make_server: ServerFactory) -> None:
    server = make_server(backend=ScriptedBackend(["some ", "text "], RuntimeError("backend died")))
    received = []
    with sdk(server) as client, pytest.raises(openai.APIError) as caught:
        for chunk in client.chat.completions.create(model="scripted", messages=HELLO, stream=True):  # type: ignore[arg-type]
            received.append(chunk.choices[0].delta.content or "")
    assert "backend died" not in caught.value.message  # the log has it; clients get no internals
    assert "failed unexpectedly" in caught.value.message
    assert "".join(received) == "some text "


def test_langchain_chat_openai_streams(make_server: ServerFactory) -> None:
    # Paced, so the chunks are not ready together (those would be joined into one).
    gateway = make_server(api_keys=(KEY,), backend=EchoBackend(delay=0.005))
    # Our own HTTP client, closed here: LangChain's default one is cached for the process
    # (per base URL), keeping a connection to this test's server open after it stops.
    with openai.DefaultHttpxClient(timeout=30) as http_client:
        llm = ChatOpenAI(
            model="echo", base_url=f"{gateway.base_url}/v1", api_key=KEY, max_retries=0, timeout=30,  # type: ignore[arg-type]
            http_client=http_client,
        )
        chunks = [chunk.content for chunk in llm.stream("Hello LangChain")]
        assert len([c for c in chunks if c]) > 1
        assert "".join(str(c) for c in chunks).endswith("Hello LangChain")
        assert llm.invoke("Once more").content.endswith("Once more")  # type: ignore[union-attr]


def test_sdk_sends_an_image_part(gateway: BackgroundServer) -> None:
    raw = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8
    url = "data:image/png;base64," + base64.b64encode(raw).decode()
    content = [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": url, "detail": "low"}},
    ]
    messages: Any = [{"role": "user", "content": content}]
    with sdk(gateway) as client:
        completion = client.chat.completions.create(model="echo", messages=messages)
        text = completion.choices[0].message.content or ""
        assert text.endswith(
            f"What is in this picture?\n[image 1: image/png, {len(raw)} bytes, "
            f"sha256 {hashlib.sha256(raw).hexdigest()}]"
        ), text
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(
                model="echo",
                messages=[{"role": "user", "content": [
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}],
            )
    assert caught.value.param == "messages[0].content[0].image_url.url"
    assert "--fetch-image-urls" in caught.value.message
