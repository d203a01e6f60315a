"""The gateway joins texts ready at the same instant into one content chunk, over a raw socket.

Joining never holds a ready text back: a text followed by a pause in the backend is
sent before the pause ends. The answer's text, its usage and the mid-stream error
event are what they were with one chunk per text.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from typing import Any, Optional

import pytest

from gprochat.openai.builder import estimate_usage
from gprochat.server import ServerConfig
from gprochat.server.backends import Backend, Conversation

from ..conftest import ServerFactory
from .helpers import http_request

MESSAGES = [{"role": "user", "content": "Join what is ready"}]


class PausingBackend(Backend):
    """Yields each run in ``runs`` at once, then waits for the test's gate before the next.

    ``error`` is raised after the last run, if given.
    """

    name = "pausing"

    def __init__(self, runs: list[list[str]], error: Optional[Exception] = None) -> None:
        self.runs = runs
        self.error = error
        self.gates = [threading.Event() for _ in runs[1:]]
        self.closed = threading.Event()

    async def stream(self, conversation: Conversation) -> AsyncIterator[str]:
        try:
            for index, run in enumerate(self.runs):
                if index:
                    gate = self.gates[index - 1]
                    while not gate.is_set():
                        await asyncio.sleep(0.005)
                for text in run:
                    yield text
            if self.error is not None:
                raise self.error
        finally:
            self.closed.set()


class SseReader:
    """Reads an SSE body from a raw chunked HTTP/1.1 response, event by event."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader
        self.buffer = b""
        self.ended = False  # the chunked terminator arrived: a complete body

    async def event(self) -> Any:
        while b"\n\n" not in self.buffer:
            size = int((await asyncio.wait_for(self.reader.readline(), 30)).strip(), 16)
            data = await asyncio.wait_for(self.reader.readexactly(size + 2), 30)
            if size == 0:
                self.ended = True
                raise EOFError("the body ended")
            self.buffer += data[:-2]
        raw, _, self.buffer = self.buffer.partition(b"\n\n")
        assert raw.startswith(b"data: ")
        payload = raw[len(b"data: "):]
        return payload.decode() if payload == b"[DONE]" else json.loads(payload)


async def _open(base_url: str, body: dict[str, Any]) -> tuple[SseReader, asyncio.StreamWriter]:
    host, port = base_url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(http_request("POST", "/v1/chat/completions", json.dumps(body).encode(),
                              {"Content-Type": "application/json"}))
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    assert head.startswith(b"HTTP/1.1 200") and b"chunked" in head.lower()
    return SseReader(reader), writer


def _content(event: Any) -> str:
    content: str = event["choices"][0]["delta"]["content"]
    return content


async def test_ready_texts_go_as_one_event_and_none_waits_for_a_pause(
    make_server: ServerFactory,
) -> None:
    backend = PausingBackend([["one ", "", "two ", "three "], ["four ", "five"], ["!"]])
    server = make_server(backend=backend)
    sse, writer = await _open(server.base_url, {
        "model": "pausing", "messages": MESSAGES, "stream": True,
        "stream_options": {"include_usage": True},
    })
    try:
        role = await sse.event()
        assert role["choices"][0]["delta"]["role"] == "assistant"
        assert _content(role) == ""
        # The first run arrives as one content event while the backend still waits.
        assert _content(await sse.event()) == "one two three "
        assert not backend.gates[0].is_set()
        backend.gates[0].set()
        assert _content(await sse.event()) == "four five"
        assert not backend.gates[1].is_set()
        backend.gates[1].set()
        assert _content(await sse.event()) == "!"
        finish = await sse.event()
        assert finish["choices"][0]["finish_reason"] == "stop"
        usage = await sse.event()
        # Usage counts the whole answer, as one chunk per text did.
        expected = estimate_usage(MESSAGES, "one two three four five!")
        assert usage["choices"] == []
        assert usage["usage"] == expected.model_dump(mode="json", exclude_unset=True)
        assert await sse.event() == "[DONE]"
        with pytest.raises(EOFError):
            await sse.event()
        assert sse.ended  # a complete body: the chunked terminator came
    finally:
        writer.close()


async def test_failure_after_ready_texts_sends_them_then_the_error_event(
    make_server: ServerFactory,
) -> None:
    backend = PausingBackend([["a ", "b "], ["c ", "d "]], RuntimeError("upstream gone"))
    server = make_server(backend=backend)
    sse, writer = await _open(server.base_url,
                              {"model": "pausing", "messages": MESSAGES, "stream": True})
    try:
        await sse.event()  # the role
        assert _content(await sse.event()) == "a b "
        backend.gates[0].set()
        # What was ready before the failure still goes out, then the error event.
        last_text = await sse.event()
        assert _content(last_text) == "c d " and last_text["choices"][0]["finish_reason"] is None
        error = await sse.event()
        assert error["error"]["type"] == "server_error"
        assert "upstream gone" not in error["error"]["message"]
        assert await sse.event() == "[DONE]"
        # Then the connection is cut: no chunked terminator, so no client takes it
        # for a complete answer.
        tail = await asyncio.wait_for(sse.reader.read(), 30)
        assert tail == b"" and not sse.ended
    finally:
        writer.close()


async def test_a_client_leaving_during_a_pause_stops_the_backend(make_server: ServerFactory) -> None:
    backend = PausingBackend([["ready ", "now "], ["never sent"]])
    server = make_server(ServerConfig(max_streams=1), backend=backend)
    sse, writer = await _open(server.base_url,
                              {"model": "pausing", "messages": MESSAGES, "stream": True})
    await sse.event()
    assert _content(await sse.event()) == "ready now "
    writer.close()
    for _ in range(500):
        if backend.closed.is_set():
            break
        await asyncio.sleep(0.01)
    assert backend.closed.is_set() and not backend.gates[0].is_set()
    for _ in range(100):
        if server.app.state.guard.streams.in_flight == 0:
            break
        await asyncio.sleep(0.01)
    assert server.app.state.guard.streams.in_flight == 0
