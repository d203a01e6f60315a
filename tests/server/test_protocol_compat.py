"""Our server speaks the GeminiProChat protocol: checks, order, statuses, bodies, streaming."""

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from gprochat import GPROChat, IncompleteResponseError, ServerError
from gprochat.errors import BackendError
from gprochat.server import BackgroundServer, ServerConfig
from gprochat.server.backends import Backend, Conversation, EchoBackend

from ..conftest import ServerFactory
from .helpers import signed


async def post(
    server: BackgroundServer,
    body: bytes | dict[str, Any],
    path: str = "/api/generate",
    content_type: str = "text/plain;charset=UTF-8",
) -> tuple[int, dict[str, str], bytes]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with aiohttp.ClientSession() as session:
        async with session.post(
            server.base_url + path, data=data, headers={"Content-Type": content_type}
        ) as r:
            return r.status, dict(r.headers), await r.read()


def error_message(raw: bytes) -> str:
    return json.loads(raw)["error"]["message"]


async def test_json_body_accepted_whatever_the_content_type(echo_server: BackgroundServer) -> None:
    for content_type in ("text/plain;charset=UTF-8", "application/json", "application/octet-stream"):
        status, headers, body = await post(echo_server, signed("Hi"), content_type=content_type)
        assert status == 200
        assert headers["Content-Type"] == "text/plain; charset=utf-8"
        assert headers.get("Transfer-Encoding") == "chunked"
        assert "Content-Length" not in headers
        assert body.decode().endswith("Hi")


async def test_checks_run_in_the_reference_order(make_server: ServerFactory) -> None:
    server = make_server(passwords=("pw",), secret_key="right")
    bad_history = signed("Hi", secret="wrong", password="nope")
    bad_history["messages"][-1]["role"] = "model"
    status, _, body = await post(server, bad_history)
    assert (status, error_message(body)) == (
        400,
        "Invalid message history: The last message must be from user role.",
    )

    status, _, body = await post(server, signed("Hi", secret="wrong", password="nope"))
    assert (status, error_message(body)) == (401, "Invalid password.")

    status, _, body = await post(server, signed("Hi", secret="wrong", password="pw"))
    assert (status, error_message(body)) == (401, "Invalid signature.")

    status, _, body = await post(server, signed("Hi", secret="right", password="pw"))
    assert status == 200


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"", "Empty request body"),
        (b"{not json", "not valid JSON"),
        (b'{"messages": [{"role": "user"}], "time": 1, "sign": "x"}', "messages.0.parts"),
        (
            b'{"messages": [{"role": "user", "parts": [{"text": 5}]}], "time": 1, "sign": "x"}',
            "messages.0.parts.0.text",
        ),
    ],
)
async def test_broken_input_gets_400_naming_the_problem(
    echo_server: BackgroundServer, raw: bytes, expected: str
) -> None:
    status, _headers, body = await post(echo_server, raw)
    assert status == 400
    assert expected in error_message(body)


async def test_chunks_are_flushed_as_the_backend_produces_them(make_server: ServerFactory) -> None:
    server = make_server(backend=EchoBackend(delay=0.2, words_per_chunk=1))
    arrivals: list[float] = []
    async with aiohttp.ClientSession() as session:
        started = time.monotonic()
        async with session.post(
            server.base_url + "/api/generate", data=json.dumps(signed("one two three"))
        ) as r:
            async for _ in r.content.iter_any():
                arrivals.append(time.monotonic() - started)
    # The first chunk arrives long before the last: nothing buffers the whole answer.
    assert len(arrivals) >= 5
    assert arrivals[-1] - arrivals[0] > 0.6


class FailingBackend(Backend):
    name = "failing"

    def __init__(self, after: list[str], error: Exception) -> None:
        self.after = after
        self.error = error

    async def stream(self, conversation: Conversation) -> AsyncIterator[str]:
        for text in self.after:
            yield text
            await asyncio.sleep(0.01)
        raise self.error


async def test_backend_failing_before_text_answers_500_with_code(make_server: ServerFactory) -> None:
    server = make_server(backend=FailingBackend([], RuntimeError("upstream exploded")))
    status, _, body = await post(server, signed())
    assert status == 500
    error = json.loads(body)["error"]
    assert error["code"] == "Error" and "failed unexpectedly" in error["message"]
    assert "upstream exploded" not in error["message"]  # internals stay in the server's log


async def test_backend_error_status_and_retry_after_pass_through(make_server: ServerFactory) -> None:
    server = make_server(
        backend=FailingBackend([], BackendError("upstream rate limited", status=429, retry_after=7))
    )
    status, headers, body = await post(server, signed())
    assert status == 429
    assert headers["Retry-After"] == "7"
    assert error_message(body) == "upstream rate limited"


async def test_backend_failing_mid_answer_cuts_the_connection(make_server: ServerFactory) -> None:
    server = make_server(backend=FailingBackend(["partial ", "answer "], RuntimeError("boom")))
    received: list[str] = []
    with pytest.raises(IncompleteResponseError) as info:
        async for text in GPROChat.create_async_generator(
            "", [{"role": "user", "content": "x"}], base_url=server.base_url
        ):
            received.append(text)
    assert "".join(received) == "partial answer "
    assert info.value.partial_text == "partial answer "
    # The server keeps serving afterwards.
    async with aiohttp.ClientSession() as session:
        async with session.get(server.base_url + "/healthz") as response:
            assert response.status == 200


async def test_backend_failure_is_a_server_error_for_the_provider(make_server: ServerFactory) -> None:
    server = make_server(backend=FailingBackend([], RuntimeError("nope")))
    with pytest.raises(ServerError):
        await GPROChat.create_async("", [{"role": "user", "content": "x"}], base_url=server.base_url)


class RecordingBackend(EchoBackend):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Conversation] = []

    async def stream(self, conversation: Conversation) -> AsyncIterator[str]:
        self.seen.append(conversation)
        async for text in super().stream(conversation):
            yield text


async def test_history_and_system_prompt_reach_the_backend(make_server: ServerFactory) -> None:
    backend = RecordingBackend()
    server = make_server(backend=backend, system_prompt="You are terse.")
    history = [{"role": "user", "parts": [{"text": "Hi"}]}, {"role": "model", "parts": [{"text": "Hello"}]}]
    status, _, _ = await post(server, signed("Tell me a joke", history=history))
    assert status == 200
    seen = backend.seen[0]
    assert seen.message == "Tell me a joke"
    assert [(t.role, t.text) for t in seen.history] == [("user", "Hi"), ("model", "Hello")]
    assert seen.system == "You are terse."


async def test_auth_route(make_server: ServerFactory) -> None:
    server = make_server(passwords=("a", "b"))
    assert json.loads((await post(server, {"pass": "b"}, "/api/auth"))[2]) == {"code": 0}
    assert json.loads((await post(server, {"pass": "c"}, "/api/auth"))[2]) == {"code": -1}
    open_server = make_server()
    assert json.loads((await post(open_server, {"pass": None}, "/api/auth"))[2]) == {"code": 0}


class BrokenBackend(Backend):
    """A backend whose ``stream`` raises before it even returns an iterator."""

    name = "broken"

    def stream(self, conversation: Conversation) -> AsyncIterator[str]:
        raise RuntimeError("misconfigured backend")


async def test_backend_raising_at_once_is_500_and_frees_its_stream_slot(make_server: ServerFactory) -> None:
    server = make_server(ServerConfig(max_streams=1), backend=BrokenBackend())
    for _ in range(3):  # a leaked slot would turn the second request into a 503
        status, _, body = await post(server, signed())
        assert status == 500
        assert json.loads(body)["error"] == {
            "code": "Error",
            "message": "The model backend failed unexpectedly; the server's log has the details.",
        }
