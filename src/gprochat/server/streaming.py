"""``ChunkStream``: a lean streaming response for ``/api/generate``.

Starlette's ``StreamingResponse`` opens an anyio task group with a second task that
listens for the client's disconnect, for every response: about a dozen objects
(task group, cancel scopes, tasks, closures) per answer. That cost dominated short
answers under load (B3) and, with a thousand open answers, fed long full garbage
collections (B4). ``ChunkStream`` sends every chunk straight to the ASGI server,
as one HTTP chunk as soon as the backend yields it (never coalesced), and watches
for the disconnect with one plain asyncio task that cancels the sender: a client
that hangs up still stops the backend at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

__all__ = ["ChunkStream", "encode_headers"]


class ChunkStream(Response):
    """Streams ``chunks`` (bytes) with status 200; always runs ``on_close`` at the end.

    ``on_close`` runs whether the answer completed, the client left, or the backend
    failed (it frees the stream slot and closes the backend's generator). An
    exception from ``chunks`` propagates, so the server cuts the connection.
    """

    def __init__(
        self,
        chunks: AsyncIterator[bytes],
        *,
        on_close: Callable[[], Awaitable[None]],
        raw_headers: Sequence[tuple[bytes, bytes]],
    ) -> None:
        # Not Response.__init__: there is no body to render, and the headers are
        # the same for every answer, encoded once (see ``encode_headers``).
        self.status_code = 200
        self.background = None
        self.body_iterator = chunks
        self.raw_headers = list(raw_headers)
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sender = asyncio.current_task()
        assert sender is not None
        watch = _DisconnectWatch(sender)
        watcher = asyncio.ensure_future(watch.run(receive))
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            async for chunk in self.body_iterator:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            watch.done = True
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not watch.disconnected:
                raise
            # Our own cancellation: the client left. Swallow it (as Starlette's task
            # group does) so the server does not log an error for an ordinary hang-up.
            uncancel = getattr(sender, "uncancel", None)  # Python >= 3.11
            if uncancel is not None:
                uncancel()
        finally:
            watch.done = True
            watcher.cancel()
            await self._on_close()


def encode_headers(media_type: str, headers: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
    """ASGI raw headers for ``ChunkStream``: ``headers`` plus the content type."""
    raw = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]
    raw.append((b"content-type", media_type.encode("latin-1")))
    return raw


class _DisconnectWatch:
    """Waits for ``http.disconnect`` and cancels the sending task if it is still streaming."""

    __slots__ = ("disconnected", "done", "sender")

    def __init__(self, sender: asyncio.Task[object]) -> None:
        self.sender = sender
        self.done = False
        self.disconnected = False

    async def run(self, receive: Receive) -> None:
        # The route has read the whole body, so the next message is the disconnect
        # (the server also sends it once the response is complete: ``done`` then).
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
        if not self.done:
            self.disconnected = True
            self.sender.cancel()
