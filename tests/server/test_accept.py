"""The server's event loop accepts every waiting connection at once (server/accept.py)."""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import threading
import urllib.request
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import uvicorn

from gprochat.server import ServerConfig, accept, create_app
from gprochat.server.accept import BatchAcceptServer, new_event_loop
from gprochat.server.runner import _uvicorn_config

BURST = 50
# A loop that lets in one connection per turn (libuv's since 1.45) needs BURST turns.
TURNS = 10


def run_on_server_loop(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(main())


class Counting(asyncio.Protocol):
    made: list[asyncio.BaseTransport]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.made.append(transport)


def listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(BURST * 2)
    return sock


async def turns(count: int) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


def test_a_burst_of_connections_is_accepted_in_one_turn() -> None:
    made: list[asyncio.BaseTransport] = []

    async def main() -> None:
        sock = listening_socket()
        protocol = type("P", (Counting,), {"made": made})
        server = await asyncio.get_running_loop().create_server(protocol, sock=sock, backlog=BURST * 2)
        assert isinstance(server, BatchAcceptServer)
        # Connected before the loop looks: all wait in the kernel's accept queue.
        clients = [socket.create_connection(sock.getsockname()) for _ in range(BURST)]
        try:
            await turns(TURNS)
            assert len(made) == BURST
        finally:
            server.close()
            for client in clients:
                client.close()
            for transport in made:
                transport.close()
            sock.close()

    run_on_server_loop(main)


def test_a_closed_server_accepts_nothing_more_and_leaves_the_socket_to_its_owner() -> None:
    made: list[asyncio.BaseTransport] = []

    async def main() -> None:
        sock = listening_socket()
        protocol = type("P", (Counting,), {"made": made})
        server = await asyncio.get_running_loop().create_server(protocol, sock=sock)
        assert server.is_serving()
        first = socket.create_connection(sock.getsockname())
        await turns(TURNS)
        assert len(made) == 1
        server.close()
        assert not server.is_serving()
        assert sock.fileno() != -1  # uvicorn closes the sockets it was given itself
        late = socket.create_connection(sock.getsockname())  # the kernel still queues it
        await turns(TURNS)
        assert len(made) == 1
        await server.wait_closed()
        for client in (first, late, sock):
            client.close()
        for transport in made:
            transport.close()

    run_on_server_loop(main)


def test_the_server_runs_on_it_and_answers_many_new_connections() -> None:
    app = create_app(ServerConfig(rate_limit=None))
    config = _uvicorn_config(app, app.state.config)
    server = uvicorn.Server(config)
    sock = listening_socket()
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            assert thread.is_alive(), "the server did not start"
            threading.Event().wait(0.01)
        assert all(isinstance(s, BatchAcceptServer) for s in server.servers)
        url = "http://{}:{}/healthz".format(*sock.getsockname())

        def status(_: int) -> int:
            with urllib.request.urlopen(url, timeout=30) as reply:
                return int(reply.status)

        with ThreadPoolExecutor(max_workers=BURST) as pool:
            statuses = list(pool.map(status, range(BURST)))
        assert statuses == [200] * BURST
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
    assert not thread.is_alive()


def test_a_server_on_a_host_and_port_is_uvloops_own() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
        try:
            assert not isinstance(server, BatchAcceptServer)
            assert server.sockets
        finally:
            server.close()
            await server.wait_closed()

    run_on_server_loop(main)


class OutOfDescriptorsOnce(socket.socket):
    """A listening socket whose first accept fails as when the process has no fd left."""

    failed = False

    def accept(self) -> tuple[socket.socket, Any]:
        if not self.failed:
            self.failed = True
            raise OSError(errno.EMFILE, "Too many open files")
        return super().accept()


def test_out_of_descriptors_pauses_accepting_then_resumes(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(accept, "ACCEPT_RETRY_DELAY", 0.05)
    made: list[asyncio.BaseTransport] = []

    async def main() -> None:
        sock = OutOfDescriptorsOnce(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        protocol = type("P", (Counting,), {"made": made})
        server = await asyncio.get_running_loop().create_server(protocol, sock=sock)
        client = socket.create_connection(sock.getsockname())
        await turns(TURNS)
        assert sock.failed and made == []  # paused, not spinning on the error
        assert "cannot accept connections" in caplog.text
        for _ in range(3_000):  # resumes after ACCEPT_RETRY_DELAY: the waiting client gets in
            if made:
                break
            await asyncio.sleep(0.01)
        assert len(made) == 1
        server.close()
        for item in (client, sock):
            item.close()
        for transport in made:
            transport.close()

    with caplog.at_level(logging.ERROR, logger="gprochat.server"):
        run_on_server_loop(main)
