"""The server's event loop: uvloop, accepting every waiting connection at once.

libuv accepts one connection per turn of its event loop (since libuv 1.45, in uvloop
0.18 and later). A turn of a busy server runs every request that became ready in it,
so a burst of new connections is let in one per turn, and the last ones wait for as
many turns as came before them while the connections already open are served
(docs/benchmarks.md, "B3: tail latency"). asyncio's own loop accepts up to
``backlog`` connections each time the listening socket is ready; ``new_event_loop``
gives uvloop that behaviour back.

``new_event_loop`` is the loop factory every server process runs on (``runner`` passes
it to uvicorn as ``loop=``, which uvicorn 0.36 and later accept): a uvloop loop whose
``create_server(sock=...)`` (how uvicorn serves a socket it is given) accepts with
``add_reader`` on the listening socket, up to ``ACCEPT_BATCH`` connections each time it
is readable, and hands each to ``connect_accepted_socket``. Everything else is uvloop's.
Without uvloop (uvicorn installed without ``[standard]``), asyncio's loop.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable
from typing import Any

__all__ = ["ACCEPT_BATCH", "BatchAcceptServer", "new_event_loop"]

logger = logging.getLogger("gprochat.server")

#: At most this many connections are accepted each time the listening socket is ready.
ACCEPT_BATCH = 128
#: After running out of file descriptors (or memory), accepting pauses this long.
ACCEPT_RETRY_DELAY = 1.0
_OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}

try:
    import uvloop
except ImportError:  # pragma: no cover - uvicorn[standard] installs it
    uvloop = None  # type: ignore[assignment]


def new_event_loop() -> asyncio.AbstractEventLoop:
    """The server's loop: uvloop accepting in batches (``BatchAcceptLoop``), else asyncio's."""
    if uvloop is None:  # pragma: no cover
        return asyncio.new_event_loop()
    return BatchAcceptLoop()


class BatchAcceptServer(asyncio.AbstractServer):
    """Accepts connections on ``sock`` for ``loop``: all that wait, up to ``ACCEPT_BATCH``."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        sock: socket.socket,
        batch: int = ACCEPT_BATCH,
    ) -> None:
        self._loop = loop
        self._protocol_factory = protocol_factory
        self._sock = sock
        self._batch = batch
        self._serving = False
        self._connecting: set[asyncio.Task[Any]] = set()
        sock.setblocking(False)
        self._start()

    def _start(self) -> None:
        self._serving = True
        self._loop.add_reader(self._sock.fileno(), self._accept)

    def _accept(self) -> None:
        for _ in range(self._batch):
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                if exc.errno not in _OUT_OF_RESOURCES:
                    raise
                # As asyncio does: stop accepting for a moment rather than spin on it.
                logger.error("cannot accept connections (%s); retrying in %g s",
                             exc, ACCEPT_RETRY_DELAY)
                self._loop.remove_reader(self._sock.fileno())
                self._loop.call_later(ACCEPT_RETRY_DELAY, self._resume)
                return
            conn.setblocking(False)
            task = self._loop.create_task(self._connect(conn))
            self._connecting.add(task)
            task.add_done_callback(self._connecting.discard)

    def _resume(self) -> None:
        if self._serving:
            self._start()

    async def _connect(self, conn: socket.socket) -> None:
        try:
            await self._loop.connect_accepted_socket(self._protocol_factory, conn)
        except OSError as exc:  # the client left before its transport was made
            logger.debug("connection closed while being accepted: %s", exc)
            conn.close()

    def close(self) -> None:
        """Stop accepting (the listening socket stays open: its owner closes it)."""
        if self._serving:
            self._serving = False
            self._loop.remove_reader(self._sock.fileno())

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def is_serving(self) -> bool:
        return self._serving

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return (self._sock,)

    async def start_serving(self) -> None:
        if not self._serving:
            self._start()

    async def serve_forever(self) -> None:
        await self.start_serving()
        try:
            await self._loop.create_future()  # until cancelled
        finally:
            self.close()

    async def wait_closed(self) -> None:
        if self._connecting:
            await asyncio.gather(*self._connecting, return_exceptions=True)


if uvloop is not None:

    class BatchAcceptLoop(uvloop.Loop):
        """uvloop's loop; a server on a given socket accepts every waiting connection."""

        async def create_server(  # type: ignore[override]
            self, protocol_factory: Callable[[], asyncio.BaseProtocol], host: Any = None,
            port: Any = None, *, sock: socket.socket | None = None, ssl: Any = None,
            **options: Any,
        ) -> asyncio.AbstractServer:
            if sock is None or ssl is not None or sock.type != socket.SOCK_STREAM:
                return await super().create_server(
                    protocol_factory, host, port, sock=sock, ssl=ssl, **options
                )
            backlog = options.get("backlog")
            if backlog is not None:
                sock.listen(backlog)  # as uvloop and asyncio do with the socket they are given
            return BatchAcceptServer(self, protocol_factory, sock)
