"""An answer's life: ``open_answer`` opens it, ``ChunkStream`` streams it, ``Answer.close`` ends it.

Both routes open theirs through ``answer_conversation``: the backend's image check,
a stream slot, then ``open_answer``.

``open_answer`` waits for the backend's first text, so that a backend failing at once
gets a proper error status (``failures.backend_failure``) instead of an empty 200; on
failure it frees the stream slot and closes the backend's stream itself. Once opened,
``Answer.close`` is the one place that frees the slot and closes the stream, whatever
happened (completed, client gone, backend failed); both routes use them.

``ChunkStream`` is a lean streaming response, used instead of Starlette's
``StreamingResponse`` (which opens a task group and a listener task for every answer;
docs/benchmarks.md, "Profiles and fixes", says what that cost). It sends every chunk
to the ASGI server as soon as the backend yields it (chunks yielded at the same
instant as one HTTP chunk, so no byte ever waits for a later one), and, once the
answer has to wait for its backend, watches for the disconnect with one plain asyncio
task that cancels the sender: a client that hangs up still stops the backend at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, NoReturn

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from .._streams import abandon_step, aclose, finish_step, first_text
from ..errors import BackendError
from .backends import Backend, Conversation
from .failures import backend_failure
from .guard import RequestGuard
from .metrics import ServerMetrics
from .observe import CLIENT_GONE, OUTCOME_KEY
from .refusals import Refusal

__all__ = [
    "Answer",
    "AnswerFailed",
    "ChunkStream",
    "StreamAborted",
    "answer_conversation",
    "encode_headers",
    "open_answer",
]


class StreamAborted(Exception):
    """Raised inside a started response so the server cuts the connection.

    The protocol has no in-band error signal: a cut body is how the client learns
    that the answer is incomplete.
    """


class AnswerFailed(Exception):
    """The backend failed before its first text; ``failure`` says how to answer."""

    def __init__(self, failure: Refusal) -> None:
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


async def answer_conversation(
    backend: Backend,
    conversation: Conversation,
    guard: RequestGuard,
    metrics: ServerMetrics,
    *,
    param: str | None = None,
) -> Answer:
    """``backend``'s answer to ``conversation``, opened up to its first text (both routes).

    Images the backend cannot see are a ``Refusal`` (400, naming ``param``) before any
    stream slot is taken; a full server is the stream limiter's 503. Raises
    ``AnswerFailed`` when the backend fails before its first text.
    """
    try:
        backend.check_images(conversation)
    except BackendError as exc:
        raise Refusal(exc.status, exc.message, param=param) from None
    release = guard.streams.try_acquire()
    return await open_answer(
        lambda: backend.stream(conversation), release, backend=backend.name, metrics=metrics
    )


MAX_JOINED_BYTES = 64 * 1024


class ChunkStream(Response):
    """Streams ``chunks`` (bytes) with status 200; always runs ``on_close`` at the end.

    Each chunk is sent as soon as it is ready; chunks ready at the same instant go as
    one HTTP chunk (``_send_chunks``).

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
        on_failure: Callable[[Exception], bytes] | None = None,
    ) -> None:
        # Not Response.__init__: there is no body to render, and the headers are
        # the same for every answer, encoded once (see ``encode_headers``).
        self.status_code = 200
        self.background = None
        self.body_iterator = chunks
        self.raw_headers = list(raw_headers)
        self._on_close = on_close
        self._on_failure = on_failure

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sender = asyncio.current_task()
        assert sender is not None
        watch = _DisconnectWatch(sender, receive)
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            await self._send_chunks(send, watch)
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
            watch.stop()
            try:
                await aclose(self.body_iterator)
            finally:
                await self._on_close()


    async def _send_chunks(self, send: Send, watch: _DisconnectWatch) -> None:
        """Send every chunk as soon as it is ready, joining those ready at the same instant.

        A chunk goes out as soon as the next one is not ready at once, so no byte
        waits for a later one; joining only saves the writes (a system call and an
        HTTP chunk each) for chunks the backend yields without waiting in between,
        such as several events parsed from one network read (docs/benchmarks.md, B3).
        "Ready at once" is decided by taking one step of ``__anext__()``: if it ends
        without suspending, the chunk was ready; if it suspends, its pending future is
        handed to the event loop as ``await`` would (``finish_step``).
        """
        chunks = self.body_iterator
        joined: list[bytes] = []
        size = 0
        while True:
            step = chunks.__anext__().__await__()
            try:
                pending = step.send(None)
            except StopIteration as ready:
                joined.append(ready.value)
                size += len(ready.value)
                if size >= MAX_JOINED_BYTES:
                    await _send_body(send, joined)
                    size = 0
                continue
            except StopAsyncIteration:
                break
            except Exception as exc:
                await self._fail(send, joined, exc)
            # Not ready: what was ready goes out now, then wait for the next one (and
            # for the client leaving meanwhile, which stops the backend).
            watch.start()
            if joined:
                try:
                    await _send_body(send, joined)
                except BaseException as exc:
                    await abandon_step(step, exc)
                    raise
                size = 0
            try:
                chunk = await finish_step(step, pending)
            except StopAsyncIteration:
                break
            except Exception as exc:
                await self._fail(send, joined, exc)
            joined.append(chunk)
            size += len(chunk)
        if joined:
            await _send_body(send, joined)


    async def _fail(self, send: Send, joined: list[bytes], exc: Exception) -> NoReturn:
        # What was ready before the failure still goes out, with ``on_failure``'s last
        # words (the gateway's error event); then the failure cuts the connection.
        if self._on_failure is None:
            if joined:
                await _send_body(send, joined)
            raise exc
        joined.append(self._on_failure(exc))
        await _send_body(send, joined)
        raise StreamAborted(str(exc)) from exc


async def _send_body(send: Send, joined: list[bytes]) -> None:
    body = joined[0] if len(joined) == 1 else b"".join(joined)
    joined.clear()
    await send({"type": "http.response.body", "body": body, "more_body": True})


def encode_headers(media_type: str, headers: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
    """ASGI raw headers for ``ChunkStream``: ``headers`` plus the content type."""
    raw = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]
    raw.append((b"content-type", media_type.encode("latin-1")))
    return raw


class _DisconnectWatch:
    """Waits for ``http.disconnect`` and cancels the sending task if it is still streaming.

    Started (``start``) only once the answer has to wait for its backend: an answer
    that is ready at once has nothing to stop, and skips the task.
    """

    __slots__ = ("disconnected", "done", "receive", "sender", "task")

    def __init__(self, sender: asyncio.Task[Any], receive: Receive) -> None:
        self.sender = sender
        self.receive = receive
        self.done = False
        self.disconnected = False
        self.task: asyncio.Future[None] | None = None

    def start(self) -> None:
        if self.task is None:
            self.task = asyncio.ensure_future(self.run(self.receive))

    def stop(self) -> None:
        self.done = True
        if self.task is not None:
            self.task.cancel()

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
