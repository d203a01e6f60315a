"""A scripted upstream for the HTTP backends: a real aiohttp server on 127.0.0.1.

Each test tells it what to answer (``respond_events``, ``respond_error``) and then
reads back what it received (``upstream.requests``). Bytes are written exactly as
given, one ``write`` per piece with a pause between, so every piece reaches the
client as its own TCP segment and chunk boundaries fall where the test put them.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web

from gprochat.server.backends import Backend

Script = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class ReceivedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: Any
    peer: Any  # the client's (host, port): the same port twice means a reused connection


class ScriptedUpstream:
    def __init__(self) -> None:
        self.requests: list[ReceivedRequest] = []
        self.client_went_away = asyncio.Event()
        self._script: Script | None = None
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # A short shutdown timeout so a handler still sleeping never stalls teardown.
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.requests.append(
            ReceivedRequest(
                method=request.method,
                path=request.path,
                query=dict(request.query),
                headers=dict(request.headers),
                json=json.loads(body) if body else None,
                peer=request.transport.get_extra_info("peername") if request.transport else None,
            )
        )
        assert self._script is not None, "the test did not script the upstream"
        return await self._script(request)

    def respond_events(
        self,
        pieces: Sequence[bytes],
        *,
        then: str = "end",
        split: Sequence[int] = (),
        pause: float = 0.01,
        content_type: str = "text/event-stream",
    ) -> None:
        """Stream ``pieces`` as the body; ``then`` is "end" (cleanly), "abort", "hang"
        (keep-alive comments until the client leaves) or "stall" (silence).

        ``split`` re-cuts the joined pieces into writes of those sizes (cycling), to put
        boundaries mid-line, mid-CRLF and mid-UTF-8 character.
        """
        if split:
            pieces = _cut(b"".join(pieces), split)

        async def script(request: web.Request) -> web.StreamResponse:
            response = web.StreamResponse(headers={"Content-Type": content_type})
            await response.prepare(request)
            try:
                for piece in pieces:
                    await response.write(piece)
                    await asyncio.sleep(pause)
                if then == "hang":
                    while True:  # keep-alive comments until the client hangs up
                        await asyncio.sleep(0.05)
                        await response.write(b": keep-alive\n\n")
                if then == "stall":
                    await asyncio.sleep(30)  # cut short by the runner's shutdown_timeout
            except ConnectionResetError:
                self.client_went_away.set()
                return response
            if then == "abort":
                # Drop the TCP connection mid-body, as a crashing upstream would.
                assert request.transport is not None
                request.transport.abort()
                return response
            await response.write_eof()
            return response

        self._script = script

    def respond(self, script: Script) -> None:
        """Answer every request with ``script(request)``."""
        self._script = script

    def respond_error(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        """Answer ``status`` with ``body`` as JSON (or as text, when it is a str)."""

        async def script(request: web.Request) -> web.StreamResponse:
            if isinstance(body, str):
                return web.Response(status=status, text=body, headers=headers)
            return web.json_response(body, status=status, headers=headers)

        self._script = script


@pytest.fixture
async def upstream() -> AsyncIterator[ScriptedUpstream]:
    server = ScriptedUpstream()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def refused_url() -> str:
    """A loopback URL where nothing listens (the port was just free)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
async def closing() -> AsyncIterator[Callable[[Backend], Backend]]:
    """Register backends to be closed at teardown, so no session is left unclosed."""
    backends: list[Backend] = []
    yield lambda backend: backends.append(backend) or backend
    for backend in backends:
        await backend.aclose()


def _cut(data: bytes, sizes: Sequence[int]) -> list[bytes]:
    pieces, start, index = [], 0, 0
    while start < len(data):
        size = sizes[index % len(sizes)]
        pieces.append(data[start : start + size])
        start, index = start + size, index + 1
    return pieces
