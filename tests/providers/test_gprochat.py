"""The GPROChat provider against our server and against scripted faulty servers."""

import asyncio
import json
import socket

import pytest

from gprochat import (
    APIStatusError,
    BadRequestError,
    ConnectError,
    GPROChat,
    IncompleteResponseError,
    InvalidPasswordError,
    InvalidSignatureError,
    ModelNotSupportedError,
    ProtocolError,
    ServerError,
)
from gprochat.protocol import generate_signature
from gprochat.server.backends import EchoBackend
from gprochat.typing import AsyncResult

from ..conftest import ServerFactory
from ..scripted import LAST_CHUNK, RecordedRequest, ScriptedServer, chunk, full_response, head

HELLO = [{"role": "user", "content": "Hello!"}]


async def collect(model: str = "", messages: object = HELLO, **kwargs: object) -> list[str]:
    # No retries: each test here is about one exchange (retries: test_retries.py).
    kwargs.setdefault("max_retries", 0)
    return [c async for c in GPROChat.create_async_generator(model, messages, **kwargs)]  # type: ignore[arg-type]


async def test_streams_several_chunks_from_our_server(make_server: ServerFactory) -> None:
    server = make_server(backend=EchoBackend(delay=0.01))
    chunks = await collect(base_url=server.base_url)
    assert len(chunks) > 2
    assert "".join(chunks).endswith("Hello!")


async def test_request_is_what_the_reference_client_sends() -> None:
    async def script(request: RecordedRequest, writer: asyncio.StreamWriter) -> None:
        writer.write(head() + chunk(b"ok") + LAST_CHUNK)

    messages = [{"role": "user", "content": "Hello!"}, {"role": "assistant", "content": "Hi there!"}]
    async with ScriptedServer(script) as server:
        await collect(base_url=server.base_url, messages=messages, secret_key="s3cret", password="pw")
    request = server.requests[0]
    assert request.method == "POST" and request.path == "/api/generate"
    assert request.headers["content-type"] == "text/plain;charset=UTF-8"
    body = request.json()
    prompt = "User: Hello!\nAssistant: Hi there!\nAssistant:"
    assert body["messages"] == [{"role": "user", "parts": [{"text": prompt}]}]
    assert body["pass"] == "pw"
    assert body["sign"] == generate_signature(body["time"], prompt, "s3cret")


async def test_multibyte_character_split_across_chunks_comes_out_whole() -> None:
    text = "né 😀 中文"
    raw = text.encode()
    cuts = [2, 6, 9, len(raw)]  # inside "é", inside the emoji, inside "中"

    async def script(request: RecordedRequest, writer: asyncio.StreamWriter) -> None:
        writer.write(head())
        start = 0
        for end in cuts:
            writer.write(chunk(raw[start:end]))
            await writer.drain()
            await asyncio.sleep(0.02)  # separate network reads
            start = end
        writer.write(LAST_CHUNK)

    async with ScriptedServer(script) as server:
        chunks = await collect(base_url=server.base_url)
    assert "".join(chunks) == text
    assert len(chunks) >= 3
    assert all("\ufffd" not in c for c in chunks)


async def test_chunked_body_cut_before_its_end_raises() -> None:
    async def script(request: RecordedRequest, writer: asyncio.StreamWriter) -> None:
        writer.write(head() + chunk(b"The beginning of an answer"))
        await writer.drain()
        writer.close()

    received: list[str] = []
    async with ScriptedServer(script) as server:
        with pytest.raises(IncompleteResponseError) as info:
            async for text in GPROChat.create_async_generator("", HELLO, base_url=server.base_url):
                received.append(text)
    assert "".join(received) == "The beginning of an answer"
    assert info.value.partial_text == "The beginning of an answer"
    assert "cut off" in str(info.value)


async def test_content_length_body_cut_short_raises() -> None:
    async def script(request: RecordedRequest, writer: asyncio.StreamWriter) -> None:
        writer.write(head(200, {"Content-Length": "100"}, chunked=False) + b"only part")
        await writer.drain()
        writer.close()

    async with ScriptedServer(script) as server:
        with pytest.raises(IncompleteResponseError):
            await collect(base_url=server.base_url)


def error_script(status: int, body: bytes, content_type: str = "text/plain;charset=UTF-8"):  # type: ignore[no-untyped-def]
    async def script(request: RecordedRequest, writer: asyncio.StreamWriter) -> None:
        writer.write(full_response(status, body, {"Content-Type": content_type}))

    return script


@pytest.mark.parametrize(
    ("status", "message", "exception"),
    [
        (400, "Invalid message history: The last message must be from user role.", BadRequestError),
        (401, "Invalid password.", InvalidPasswordError),
        (401, "Invalid signature.", InvalidSignatureError),
    ],
)
async def test_error_statuses_raise_typed_errors(status: int, message: str, exception: type) -> None:
    body = json.dumps({"error": {"message": message}}).encode()
    async with ScriptedServer(error_script(status, body)) as server:
        with pytest.raises(exception) as info:
            await collect(base_url=server.base_url)
    assert info.value.status_code == status
    assert info.value.server_message == message
    assert message in str(info.value)


async def test_server_error_carries_code_and_upstream_message() -> None:
    body = json.dumps({"error": {"code": "Error", "message": "upstream quota exhausted"}}).encode()
    async with ScriptedServer(error_script(500, body)) as server:
        with pytest.raises(ServerError) as info:
            await collect(base_url=server.base_url)
    assert info.value.status_code == 500
    assert info.value.code == "Error"
    assert info.value.server_message == "upstream quota exhausted"


async def test_non_json_error_body_falls_back_to_text() -> None:
    async with ScriptedServer(error_script(502, b"Bad gateway from nginx")) as server:
        with pytest.raises(ServerError, match="Bad gateway from nginx"):
            await collect(base_url=server.base_url)


async def test_signature_hint_tells_what_to_do() -> None:
    body = json.dumps({"error": {"message": "Invalid signature."}}).encode()
    async with ScriptedServer(error_script(401, body)) as server:
        with pytest.raises(InvalidSignatureError, match="GPROCHAT_SECRET_KEY"):
            await collect(base_url=server.base_url)


async def test_refused_port_raises_connect_error_naming_the_url() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again below: nothing listens there
    with pytest.raises(ConnectError) as info:
        await collect(base_url=f"http://127.0.0.1:{port}")
    assert f"127.0.0.1:{port}" in str(info.value)
    assert isinstance(info.value, ConnectionError)


async def test_wrong_secret_against_our_server(make_server: ServerFactory) -> None:
    server = make_server(secret_key="deployment-secret")
    with pytest.raises(InvalidSignatureError):
        await collect(base_url=server.base_url)
    assert await collect(base_url=server.base_url, secret_key="deployment-secret")


async def test_password_against_our_server(make_server: ServerFactory) -> None:
    server = make_server(passwords=("one", "two"))
    with pytest.raises(InvalidPasswordError):
        await collect(base_url=server.base_url)
    with pytest.raises(InvalidPasswordError):
        await collect(base_url=server.base_url, password="three")
    assert "Hello!" in "".join(await collect(base_url=server.base_url, password="two"))


async def test_environment_variables_choose_the_deployment(
    make_server: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = make_server(secret_key="env-secret", passwords=("env-pass",))
    monkeypatch.setenv("GPROCHAT_BASE_URL", server.base_url)
    monkeypatch.setenv("GPROCHAT_SECRET_KEY", "env-secret")
    monkeypatch.setenv("GPROCHAT_PASSWORD", "env-pass")
    assert "Hello!" in "".join(await collect())


async def test_subclass_targets_its_own_deployment(make_server: ServerFactory) -> None:
    server = make_server(secret_key="sub-secret")

    class MyDeployment(GPROChat):
        url = server.base_url
        secret_key = "sub-secret"

    text = await MyDeployment.create_async("", HELLO)
    assert text.endswith("Hello!")
    assert MyDeployment.generate_signature(1, "x") == generate_signature(1, "x", "sub-secret")


async def test_unknown_model_is_refused_before_the_prompt_is_sent() -> None:
    # A name that is not ours is asked of the deployment (tests/providers/test_models.py);
    # a stock GeminiProChat server has no /api/models, so the prompt never goes.
    async def stock(request: RecordedRequest, writer: asyncio.StreamWriter) -> None:
        writer.write(full_response(404, b"Not Found"))

    async with ScriptedServer(stock) as server:
        with pytest.raises(ModelNotSupportedError, match=r"gemini-1\.5-pro"):
            await collect(base_url=server.base_url, model="gpt-9")
        assert [request.path for request in server.requests] == ["/api/models"]


async def test_empty_messages_are_refused() -> None:
    with pytest.raises(ProtocolError, match="messages is empty"):
        await collect(base_url="http://127.0.0.1:9", messages=[])


def test_every_status_error_is_an_api_status_error() -> None:
    for exception in (BadRequestError, InvalidPasswordError, InvalidSignatureError, ServerError):
        assert issubclass(exception, APIStatusError)


async def test_create_async_is_the_generators_text(make_server: ServerFactory) -> None:
    # create_async reads the stream directly (a fast path); it must give what the generator gives.
    server = make_server(backend=EchoBackend(delay=0.01))
    chunks = await collect(base_url=server.base_url)
    text = await GPROChat.create_async("", HELLO, base_url=server.base_url, max_retries=0)
    assert text == "".join(chunks)
    assert text.endswith("Hello!")


async def test_create_async_goes_through_a_subclass_generator(make_server: ServerFactory) -> None:
    class Shouting(GPROChat):
        @classmethod
        async def create_async_generator(  # type: ignore[override]
            cls, model: str, messages: object, proxy: object = None, **kwargs: object
        ) -> AsyncResult:
            async for piece in super().create_async_generator(model, messages, proxy, **kwargs):  # type: ignore[arg-type]
                yield piece.upper()

    server = make_server(backend=EchoBackend())
    text = await Shouting.create_async("", HELLO, base_url=server.base_url, max_retries=0)
    assert text.endswith("HELLO!")
