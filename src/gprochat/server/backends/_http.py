"""What the HTTP backends share: one session each, the SSE request, the error mapping.

Every aiohttp exception and every upstream error status becomes a
``BackendError`` here, in ``StreamingHTTPBackend.post_events``, and nowhere else.
The ``status`` we pick is what our own server answers with:

    upstream 401/403 (wrong or missing key)   502, "server configuration error: ..."
    upstream 429                              429, with the upstream's Retry-After
    upstream 400 / other 4xx / 5xx            502, quoting the upstream's error.message
    refused connection, unknown host          502, "cannot reach upstream ..."
    connect or idle-read timeout              504
    no pooled connection free in pool_timeout 503 + Retry-After, "all N connections ... busy"
    body cut before its proper end            502, "upstream stream ended early ..."
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any

import aiohttp
from aiohttp.payload import Payload
from yarl import URL

from gprochat.errors import BackendError
from gprochat.protocol import parse_retry_after

from ._sse import ServerSentEvent, SSEDecoder, SSEError
from .base import Backend, InvalidOptionError

__all__ = [
    "InvalidOptionError",
    "StreamingHTTPBackend",
    "drain",
    "ended_early",
    "status_error",
]

_ERROR_BODY_LIMIT = 64 * 1024


class StreamingHTTPBackend(Backend):
    """A backend that POSTs JSON and reads server-sent events back.

    Subclasses set ``upstream`` (a name for messages) and ``key_hint`` (how the
    operator sets the key), and turn the events from ``post_events`` into text.
    """

    upstream = "upstream"
    key_hint = "check the server's API key option"

    def __init__(
        self,
        *,
        base_url: str,
        connect_timeout: float,
        read_timeout: float,
        max_connections: int = 100,
        pool_timeout: float | None = None,
    ) -> None:
        url = URL(base_url)
        if not url.absolute or url.scheme not in ("http", "https"):
            raise InvalidOptionError(
                "base_url", f"{self.upstream} base URL must be http(s)://..., not {base_url!r}"
            )
        if max_connections < 0:
            raise InvalidOptionError("max_connections", "max_connections must be >= 0 (0: no limit)")
        self.base_url = base_url.rstrip("/")
        # sock_connect, not connect: aiohttp's `connect` also counts the wait for a
        # pooled connection, and would report a full pool as a connect timeout.
        self.timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout, sock_read=read_timeout
        )
        #: Most connections open to the upstream at once (0: no limit). The server
        #: sizes it from --max-streams (ServerConfig), one per answer streaming.
        self.max_connections = max_connections
        #: Seconds a request may wait for a free connection before a 503.
        self.pool_timeout = connect_timeout if pool_timeout is None else pool_timeout
        self._slots: asyncio.Semaphore | None = (
            asyncio.Semaphore(max_connections) if max_connections else None
        )
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        # Created on first use, inside the server's running loop, then reused so
        # connections to the upstream stay alive between requests. The connector has
        # no limit of its own: _slots bounds the connections, and times the wait.
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self.timeout, connector=aiohttp.TCPConnector(limit=0, limit_per_host=0)
            )
        return self._session

    async def _connection_slot(self) -> None:
        """Wait for one of ``max_connections`` (at most ``pool_timeout``); 503 if none frees."""
        slots = self._slots
        if slots is None:
            return
        if not slots.locked():
            await slots.acquire()
            return
        try:
            await asyncio.wait_for(slots.acquire(), self.pool_timeout)
        except asyncio.TimeoutError:
            raise BackendError(
                f"all {self.max_connections} connections to {self.upstream} stayed busy for "
                f"{self.pool_timeout:g}s (the connection pool is full, sized by --max-streams); "
                "retry shortly",
                status=503,
                retry_after=1,
            ) from None

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def post_events(
        self, url: str, body: Mapping[str, Any] | Payload, headers: Mapping[str, str]
    ) -> AsyncGenerator[ServerSentEvent, None]:
        """POST ``body`` as JSON (or a payload, such as ``_json_body.JSONBody``, as it is)
        and yield the answer's events; raise ``BackendError``.

        The response is released when the stream ends, fails or is closed early
        (use ``contextlib.aclosing`` so that "early" happens at once, not at GC).
        """
        answered = False
        await self._connection_slot()
        try:
            sent = {"data": body} if isinstance(body, Payload) else {"json": body}
            async with self._get_session().post(url, headers=headers, **sent) as response:
                answered = True
                if response.status != 200:
                    text = await response.content.read(_ERROR_BODY_LIMIT)
                    raise status_error(
                        response.status,
                        text.decode("utf-8", "replace"),
                        response.headers,
                        upstream=self.upstream,
                        key_hint=self.key_hint,
                    )
                if response.content_type != "text/event-stream":
                    # A 200 HTML page usually means base_url points at a web site or proxy.
                    raise BackendError(
                        f"{self.upstream} answered with Content-Type "
                        f"{response.content_type!r}, not an event stream: a server "
                        "configuration error; tell the operator",
                        detail=f"POST {URL(url).with_query(None)}: check the base URL "
                        f"({self.base_url})",
                    )
                decoder = SSEDecoder()
                async for chunk in response.content.iter_any():
                    for event in decoder.feed(chunk):
                        yield event
                for event in decoder.close():
                    yield event
        except (aiohttp.ClientError, asyncio.TimeoutError, SSEError) as exc:
            raise self._client_error(exc, url, answered) from exc
        finally:
            if self._slots is not None:
                self._slots.release()

    def _client_error(self, exc: BaseException, url: str, answered: bool) -> BackendError:
        where = str(URL(url).with_query(None))
        if isinstance(exc, asyncio.TimeoutError):  # aiohttp's timeouts subclass it
            limit = "connect" if isinstance(exc, aiohttp.ConnectionTimeoutError) else "read"
            seconds = self.timeout.sock_connect if limit == "connect" else self.timeout.sock_read
            after = f" {seconds:g}s" if seconds else ""
            return BackendError(
                f"{self.upstream} timed out ({limit} timeout{after})", status=504, detail=where
            )
        if isinstance(exc, aiohttp.ClientConnectorError):
            reason = str(exc.os_error) or str(exc)
            return BackendError(
                f"this server cannot reach {self.upstream}; retry later",
                detail=f"cannot reach upstream URL {where}: {reason}",
            )
        if isinstance(exc, aiohttp.ClientPayloadError) or (
            answered and isinstance(exc, aiohttp.ServerDisconnectedError)
        ):
            return ended_early(self.upstream, f"{type(exc).__name__}: {exc}")
        if isinstance(exc, aiohttp.ServerDisconnectedError):
            return BackendError(
                f"{self.upstream} closed the connection without answering", detail=where
            )
        if isinstance(exc, SSEError):
            return BackendError(f"{self.upstream} sent a malformed event stream: {exc}")
        return BackendError(
            f"the request to {self.upstream} failed", detail=f"{where}: {exc!r}"
        )


async def drain(events: AsyncIterator[ServerSentEvent], timeout: float = 1.0) -> None:
    """Read what follows an answer's end marker, so the connection goes back to the pool.

    Releasing a response before its body has ended closes the connection. Servers end
    the body right after the marker; one that does not only costs us the connection:
    the answer is already complete, so neither a timeout nor an error here matters.
    """

    async def read_rest() -> None:
        async for _ in events:
            pass

    with contextlib.suppress(asyncio.TimeoutError, BackendError):
        await asyncio.wait_for(read_rest(), timeout)


def ended_early(upstream: str, detail: str) -> BackendError:
    """The error for an answer cut before its end marker."""
    return BackendError(f"upstream stream ended early: {upstream} stopped mid-answer ({detail})")


def status_error(
    status: int, body: str, headers: Mapping[str, str], *, upstream: str, key_hint: str
) -> BackendError:
    """Map an upstream error response to the ``BackendError`` our server answers with."""
    message, reason = _error_message(body)
    said = f"{upstream} answered {status}: {message!r}"
    # Gemini reports a bad key as 400 INVALID_ARGUMENT with reason API_KEY_INVALID.
    if status in (401, 403) or reason == "API_KEY_INVALID":
        return BackendError(
            f"server configuration error: {upstream} refused this server's key; tell the "
            "operator",
            status=502,
            detail=f"{said}; {key_hint}",
            key_rejected=True,
        )
    if status == 429:
        retry_after = parse_retry_after(headers.get("Retry-After"))
        return BackendError(
            f"{upstream} is rate limiting us ({said})", status=429, retry_after=retry_after
        )
    return BackendError(said, status=502)


def _error_message(body: str) -> tuple[str, str | None]:
    """The upstream's ``error.message`` (or its raw text) and Google's error reason, if any."""
    try:
        error = json.loads(body)["error"]
        message = error["message"] if isinstance(error, dict) else error
    except (ValueError, KeyError, TypeError):
        return (body.strip()[:500] or "no error message"), None
    reason = None
    details = error.get("details") if isinstance(error, dict) else None
    for detail in details if isinstance(details, list) else ():
        if isinstance(detail, dict) and detail.get("reason"):
            reason = str(detail["reason"])
    return str(message), reason
