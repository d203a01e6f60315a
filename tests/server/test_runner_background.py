"""``BackgroundServer.stop()``: at once when no answer is in flight (idle connections
closed), gracefully when one is."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import threading
import time
from collections.abc import AsyncIterator

from gprochat.server import BackgroundServer, ServerConfig, create_app
from gprochat.server.backends import Backend
from gprochat.server.backends.base import Conversation

from .helpers import signed


class GatedBackend(Backend):
    """Answers "first ", then waits for the test to open ``gate``, then "last"."""

    name = "gated"

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.closed = 0

    async def stream(self, conversation: Conversation) -> AsyncIterator[str]:
        yield "first "
        await asyncio.to_thread(self.gate.wait, 30)
        yield "last"

    async def aclose(self) -> None:
        self.closed += 1


def test_stopped_with_nothing_open_the_app_is_shut_down() -> None:
    backend = GatedBackend()
    server = BackgroundServer(app=create_app(ServerConfig(), backend=backend)).start()
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    connection.request("GET", "/healthz")
    assert connection.getresponse().status == 200
    connection.close()
    server.stop()
    assert backend.closed == 1  # the lifespan's shutdown ran
    assert not server._thread.is_alive()


def test_stopped_with_an_idle_keep_alive_connection_it_is_closed() -> None:
    backend = GatedBackend()
    server = BackgroundServer(app=create_app(ServerConfig(), backend=backend)).start()
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.request("GET", "/healthz")
        response = connection.getresponse()
        assert response.status == 200 and not response.will_close
        response.read()
        server.stop()
        assert backend.closed == 1
        assert connection.sock is not None and connection.sock.recv(1) == b""  # closed by the server
    finally:
        connection.close()


def test_stopped_mid_answer_the_answer_finishes_first() -> None:
    backend = GatedBackend()
    server = BackgroundServer(app=create_app(ServerConfig(), backend=backend)).start()
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.request("POST", "/api/generate", body=json.dumps(signed("Hi")),
                           headers={"Content-Type": "text/plain;charset=UTF-8"})
        response = connection.getresponse()
        assert response.status == 200
        assert response.read1() == b"first "
        stopper = threading.Thread(target=server.stop)
        stopper.start()
        # Shutting down: the listening socket closes while the answer is still open.
        deadline = time.monotonic() + 30
        while _accepts(server.port):
            assert time.monotonic() < deadline, "the server never stopped listening"
            time.sleep(0.01)
        assert stopper.is_alive() and backend.closed == 0
        backend.gate.set()
        assert response.read() == b"last"
        stopper.join(timeout=30)
        assert not stopper.is_alive() and backend.closed == 1
    finally:
        connection.close()
        backend.gate.set()
        server.stop()


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return False
    return True
