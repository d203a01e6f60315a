"""An answer's life: ``open_answer`` opens it, ``ChunkStream`` streams it, ``Answer.close`` ends it.

``open_answer`` waits for the backend's first text, so that a backend failing at once
gets a proper error status (``failures.backend_failure``) instead of an empty 200; on
failure it frees the stream slot and closes the backend's stream itself. Once opened,
``Answer.close`` is the one place that frees the slot and closes the stream, whatever
happened (completed, client gone, backend failed); both routes use them.

``ChunkStream`` is a lean streaming response.

Starlette's ``StreamingResponse`` opens an anyio task group with a second task that
listens for the client's disconnect, for every response: about a dozen objects
(task group, cancel scopes, tasks, closures) per answer, which cost short answers
under load and long garbage collections under many open ones (docs/benchmarks.md,
B3 and B4). ``ChunkStream`` sends every chunk straight to the ASGI server,
as one HTTP chunk as soon as the backend yields it (never coalesced), and watches
for the disconnect with one plain asyncio task that cancels the sender: a client
that hangs up still stops the backend at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from .._streams import aclose, first_text
from .failures import Failure, backend_failure
from .metrics import ServerMetrics
from .observe import CLIENT_GONE, OUTCOME_KEY

__all__ = ["Answer", "AnswerFailed", "ChunkStream", "encode_headers", "open_answer"]


class AnswerFailed(Exception):
    """The backend failed before its first text; ``failure`` says how to answer."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


class Answer:
    """An opened answer: its ``first`` text, the ``rest``, and ``close()`` (idempotent)."""

    __slots__ = ("_release", "first", "rest")

    def __init__(self, first: str, rest: AsyncIterator[str], release: Callable[[], None]) -> None:
        self.first = first
        self.rest = rest
        self._release = release

    async def close(self) -> None:
        """Free the stream slot and close the backend's stream."""
        self._release()
        await aclose(self.rest)


async def open_answer(
    open_stream: Callable[[], AsyncIterator[str]],
    release: Callable[[], None],
    *,
    backend: str,
    metrics: ServerMetrics,
) -> Answer:
    """Start ``open_stream()`` and wait for its first text; ``release`` frees the slot.

    Raises ``AnswerFailed`` when the backend fails first (slot freed, stream closed).
    """
    chunks: AsyncIterator[str] | None = None
    try:
        chunks = open_stream().__aiter__()
        first = await first_text(chunks)
    except BaseException as exc:
        release()
        if chunks is not None:
            await aclose(chunks)
        if not isinstance(exc, Exception):
            raise
        metrics.backend_errors.labels(backend, "before_text").inc()
        raise AnswerFailed(backend_failure(exc, backend)) from exc
    return Answer(first, chunks, release)


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
            # group does) so the server does not log an error for an ordinary hang-up,
            # and tell the access log (observe.py) that the answer was not complete.
            scope[OUTCOME_KEY] = CLIENT_GONE
            uncancel = getattr(sender, "uncancel", None)  # Python >= 3.11
            if uncancel is not None:
                uncancel()
        finally:
            watch.done = True
            watcher.cancel()
            try:
                await aclose(self.body_iterator)
            finally:
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
