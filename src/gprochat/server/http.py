"""The HTTP/1.1 layer in front of the app: uvicorn's httptools protocol, with limits.

uvicorn parses requests with llhttp (through httptools), which already refuses
ambiguous framing: Content-Length together with Transfer-Encoding, two different
Content-Lengths, a chunk size that overflows, bare LF line ends, obsolete line
folding. ``LimitedHttpProtocol`` adds what a server on the internet also needs
(docs/server.md, "The HTTP layer", says why this and not another server):

    what the client does                            what it gets
    head (request line + headers) not in within      408, then close (a connection that
      header_timeout                                   sent nothing is closed silently)
    body silent for body_idle_timeout, or not         408 (or a cut, once the answer has
      complete within body_timeout                     started), then close
    URL longer than max_url_bytes                    414, then close
    more than max_header_count headers, or a         431, then close
      head larger than max_header_bytes
    HTTP/1.1 without exactly one valid Host          400, then close
    a request line without a version (HTTP/0.9)      400, then close
    Transfer-Encoding not ending in chunked, or      400, then close
      any framing llhttp refuses, or an Upgrade
      request with a body
    a valid request, then bytes that are not one     the request's answer (a stream in
      (in the same packet, or pipelined)               full), then 400, then close
    HTTP/1.0 (ApacheBench, some proxies), answered   no chunked framing (1.0 has none): the
      without a Content-Length (a stream)              body as it comes, Connection: close,
                                                       then close
    keep-alive connection idle for                   closed
      keepalive_timeout
    a new connection beyond max_connections          idle keep-alive connections are
                                                       closed to make room; if none is
                                                       idle, 503, then close
    reads its answer only after writing its whole    the answer carries Connection: close;
      body, and the answer (a 413) came first          up to drain_bytes of the body are read
                                                       and dropped, for up to drain_timeout,
                                                       before the close
    is answered early (a 429) while at most          the answer is held until those bytes
      HOLD_BYTES of its body are still to come         have come (or the body's timeouts
                                                       pass), then sent, then the close

"Then close" is always a lingering close: the answer is written, the sending side
is shut (FIN), and what the client still sends is read and dropped (bounded as
above) until it closes. (Closing a socket with unread data sends a reset, which
destroys the answer in the client's receive buffer.)

An early answer to a small body is held until the body is in, because a proxy may be
writing that body from its own client while the answer arrives: Go's HTTP/1 server
(Caddy, Traefik) then reads and drops the rest of its client's body for its reply,
under the proxy's own copy of it, which fails the proxy's upstream connection and
cuts the answer after its head (seen through Caddy: a 429 with 0 of its 117 body
bytes). Once the body is in, nothing races; a larger remainder is answered at once
(Go does not read more than 256 KiB for its reply, and a 413 should not wait).

Each refusal above is one access-log line and one count in the metrics, like any
other answer: the app (``observe.py``) puts a callable taking a ``Refusal`` in the
ASGI lifespan state under ``REFUSAL_OBSERVER``; a refusal of a request the app is
already reading (a body too slow) is put in that request's scope under
``REFUSED_KEY`` instead, so that the request has one line, not two.

Each connection has one timer for every phase, re-armed only when it fires before
the current deadline (see ``_check``).

A body with a Content-Length reaches the app in one message once the app asks for it
(``_Cycle``): the app has accepted its declared size by then (``guard.admit``), so it
is read without pausing and kept as it arrives, past the parser. A chunked body comes
piece by piece, as uvicorn hands it over, so that the app can refuse it at its limit.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import Any, Literal

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from .config import HttpLimits  # defined with the server's settings: importable without uvicorn
from .logs import log_access

__all__ = [
    "REFUSAL_OBSERVER", "REFUSED_KEY", "HttpLimits", "HttpServerConfig", "LimitedHttpProtocol",
    "Refusal",
]

#: The ASGI lifespan state key under which the app puts its ``Callable[[Refusal], None]``.
REFUSAL_OBSERVER = "gprochat.http.refusal_observer"
#: The scope key of a request the app was reading when the HTTP layer refused it.
REFUSED_KEY = "gprochat.http.refused"


#: An answer started while at most this many bytes of its request's body are still to
#: come waits for them (uvicorn's buffer before it pauses reading: 64 KiB).
HOLD_BYTES = 64 * 1024

# head: the request line and headers are due; body: the request is being read (or
# answered, once its body is complete); idle: between requests; drain: closing.
_Phase = Literal["head", "body", "idle", "drain"]

# RFC 9110 section 7.2 / RFC 3986: uri-host [ ":" port ]. uri-host is an IP literal in
# brackets, or a reg-name / IPv4 address (unreserved, pct-encoded, sub-delims).
_HOST = re.compile(
    rb"(?:\[[0-9A-Fa-f:.]+\]|(?:[A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})*)(?::[0-9]{0,5})?"
)


class HttpServerConfig(uvicorn.Config):
    """uvicorn's settings plus ours: ``LimitedHttpProtocol`` reads ``http_limits`` from here.

    A module-level class, so it pickles to the worker processes of ``--workers N``.
    """

    def __init__(self, app: Any, *, limits: HttpLimits, **options: Any) -> None:
        options.setdefault("http", LimitedHttpProtocol)
        # WebSockets: no route uses them; an Upgrade is served as plain HTTP/1.1.
        options.setdefault("ws", "none")
        super().__init__(app, timeout_keep_alive=max(1, round(limits.keepalive_timeout)), **options)
        self.timeout_keep_alive = limits.keepalive_timeout  # type: ignore[assignment]
        self.http_limits = limits


@dataclass(frozen=True)
class Refusal:
    """A request the HTTP layer answered with an error itself, for the access log and metrics.

    ``reason`` is a short fixed code (``url_too_long``, ``head_timeout``, ...), ``message``
    what the client was told, ``scope`` what is known of the request (``client`` and
    ``headers`` always), ``duration`` the seconds from its first byte to the refusal.
    """

    status: int
    reason: str
    message: str
    method: str
    scope: MutableMapping[str, Any]
    duration: float


class _Refused(Exception):
    """Raised inside a parser callback: answer ``status`` with ``message``, then close."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


_REASONS = {
    400: b"Bad Request",
    408: b"Request Timeout",
    413: b"Content Too Large",
    414: b"URI Too Long",
    431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
}


def _error_bytes(status: int, message: str, extra: bytes = b"") -> bytes:
    body = json.dumps({"error": {"message": message}}).encode()
    return b"".join([
        b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Error")),
        b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body),
        extra,
        b"connection: close\r\n\r\n",
        body,
    ])


class LimitedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with timeouts, size limits, Host checks and lingering close."""

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self.limits: HttpLimits = getattr(config, "http_limits", None) or HttpLimits()
        self._phase: _Phase = "head"
        self._started = 0.0  # when the current phase began (loop time)
        self._last_body = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._head_seen = False  # a byte of the current request's head has arrived
        self._head_bytes = 0
        self._drained = 0
        self._over_capacity = False
        self._request_began = 0.0  # loop time of the current request's first byte
        # The current request's head, as _check_head read it: a body at all, and its
        # Content-Length (None: chunked, or no body).
        self._has_body = False
        self._declared_length: int | None = None
        # A refusal (status, reason, message) waiting for the answers to the requests
        # that came before the bad bytes, on the same connection.
        self._refusal_due: tuple[int, str, str] | None = None

    # -- connection --------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._enter("head")
        limit = self.limits.max_connections
        if limit and len(self.connections) > limit:
            self._make_room(len(self.connections) - limit)

    def _make_room(self, excess: int) -> None:
        for other in list(self.connections):
            if excess <= 0:
                return
            if other is not self and isinstance(other, LimitedHttpProtocol) and other.idle:
                other.transport.close()
                excess -= 1
        self._over_capacity = excess > 0

    @property
    def idle(self) -> bool:
        """Between requests on a kept-alive connection: safe to close."""
        return self._phase == "idle" and (self.cycle is None or self.cycle.response_complete)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        phase = self._phase
        if phase == "drain":
            self._drained += len(data)
            if self._drained > self.limits.drain_bytes:
                self.transport.close()
            return
        if self._refusal_due is not None:
            return  # past bad bytes: nothing more is read as requests
        if phase == "body":
            self._last_body = self.loop.time()
            cycle = self.cycle
            if type(cycle) is _Cycle and cycle.left:
                data = self._take_body(cycle, data)
                if not data:
                    return
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # no upgrades: the request was served as plain HTTP/1.1
        except httptools.HttpParserError as exc:
            cause = exc.__context__
            if isinstance(cause, _Refused):
                refusal = (cause.status, cause.reason, cause.message)
            else:
                refusal = (400, "malformed", f"Invalid HTTP request: {exc}. Send well-formed HTTP/1.1.")
            cycle = self.cycle
            if cycle is not None and not cycle.more_body and not cycle.response_complete:
                # Whole requests came before the bad bytes (in the same packet, say): they
                # are answered first, then the refusal (on_response_complete).
                self._refusal_due = refusal
                self._phase = "body"  # no deadline while those answers are written
            else:
                self._refuse(*refusal)
            return
        if self._phase == "head" and self._head_seen:
            self._check_head_size(len(data))

    def _check_head_size(self, received: int) -> None:
        """Bound a head still arriving (llhttp keeps a header's bytes until it ends)."""
        limits = self.limits
        if len(self.url) > limits.max_url_bytes:
            self._refuse(414, "url_too_long", self._too_long_url())
            return
        self._head_bytes += received
        if self._head_bytes > limits.max_url_bytes + limits.max_header_bytes + 1024:
            self._refuse(431, "head_too_large", self._too_large_head())

    def _unsupported_upgrade_warning(self) -> None:
        pass  # uvicorn logs two warnings per Upgrade request: a way to flood the log

    # -- parser callbacks: the head is checked once, when it is complete ----

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_seen = True
        self._head_bytes = 0
        self._enter("head")
        self._request_began = self._started

    def on_headers_complete(self) -> None:
        self._check_head()
        if self._over_capacity:
            app, self.app = self.app, self._busy_app
            try:
                super().on_headers_complete()
            finally:
                self.app = app
        else:
            super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle.scope is self.scope:
            self._enter("body")
            self._last_body = self._started
            if type(cycle) is RequestResponseCycle and (
                self._has_body or self.scope["http_version"] == "1.0"
            ):
                # A body: read whole, and an answer before it closes lingering; HTTP/1.0:
                # no chunked answer (it has no such framing).
                cycle.__class__ = _Cycle
                cycle.declared_length = self._declared_length  # type: ignore[attr-defined]

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        if type(cycle) is _Cycle:
            cycle.received += len(body)
            if cycle.pieces is not None:
                if not cycle.response_complete:
                    cycle.pieces.append(body)  # the app is woken once, when the body is whole
                return
        super().on_body(body)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        held = _held(self.cycle)
        if held is not None:
            held.release()

    def _take_body(self, cycle: _Cycle, data: bytes) -> bytes:
        """Keep the bytes received as the body's next piece, without the parser (whose
        ``on_body`` would copy them); return what follows the body (a pipelined request)."""
        assert cycle.pieces is not None
        left = cycle.left
        if len(data) < left:
            cycle.pieces.append(data)
            cycle.left = left - len(data)
            return b""
        cycle.pieces.append(data if len(data) == left else data[:left])
        cycle.left = 0
        # The parser still counts the body down: a new one starts at the next request, as
        # it would after this one (uvicorn's leniency included), and the message is complete.
        self.parser = httptools.HttpRequestParser(self)
        self.parser.set_dangerous_leniencies(lenient_data_after_close=True)
        self.on_message_complete()
        return data[left:]

    def _check_head(self) -> None:
        """Version, URL, header count and size, Host, Transfer-Encoding; raise ``_Refused``."""
        if self.parser.get_http_version() == "0.9":  # llhttp's reading of a line without one
            raise _Refused(
                400,
                "no_http_version",
                "Invalid request line: it has no HTTP version (HTTP/0.9 is not served). "
                "Send 'GET /path HTTP/1.1' with a Host header.",
            )
        limits = self.limits
        if len(self.url) > limits.max_url_bytes:
            raise _Refused(414, "url_too_long", self._too_long_url())
        headers = self.headers  # uvicorn's list: (lower-cased name, value)
        if len(headers) > limits.max_header_count:
            raise _Refused(
                431,
                "too_many_headers",
                f"Too many request headers: more than {limits.max_header_count}. "
                "Send fewer headers.",
            )
        size = hosts = 0
        host_ok = chunked_last = True
        has_body = chunked = False
        declared = 0
        for name, value in headers:
            size += len(name) + len(value) + 4
            if name == b"host":
                hosts += 1
                host_ok = host_ok and _HOST.fullmatch(value.strip()) is not None
            elif name == b"content-length":
                has_body = has_body or value.strip() not in (b"", b"0")
                declared = int(value) if value.strip().isdigit() else 0  # llhttp checked it
            elif name == b"transfer-encoding":
                chunked_last = value.rsplit(b",", 1)[-1].strip().lower() == b"chunked"
                has_body = chunked = True
        self._has_body = has_body
        self._declared_length = declared if has_body and not chunked else None
        if size > limits.max_header_bytes:
            raise _Refused(431, "head_too_large", self._too_large_head())
        if not host_ok or (hosts != 1 and self.parser.get_http_version() == "1.1"):
            raise _Refused(
                400,
                "bad_host",
                "Invalid Host header: an HTTP/1.1 request needs exactly one Host header, "
                "a host name or address with an optional port.",
            )
        if not chunked_last:
            raise _Refused(
                400,
                "bad_transfer_encoding",
                "Unsupported Transfer-Encoding: the last coding must be chunked. "
                "Send the body with Content-Length or chunked encoding.",
            )
        if has_body and self.parser.should_upgrade():
            # llhttp hands everything after the head to the new protocol, body included:
            # served as HTTP/1.1, the request would arrive without its body.
            raise _Refused(
                400,
                "upgrade_with_body",
                "Upgrade is not supported on a request with a body: send it without the "
                "Upgrade and Connection: upgrade headers.",
            )

    def on_response_complete(self) -> None:
        if self._phase == "drain" or _held(self.cycle) is not None:
            # No keep-alive: the connection closes once drained (or once the held answer
            # is sent, then drained).
            self.server_state.total_requests += 1
            return
        super().on_response_complete()
        if self._refusal_due is not None:
            cycle = self.cycle
            if cycle is not None and cycle.response_complete and not self.transport.is_closing():
                # The last request before the bad bytes is answered (not just started).
                self._unset_keepalive_if_required()
                self._refuse(*self._refusal_due)
        elif self._phase == "body" and not self.pipeline and not self.transport.is_closing():
            self._phase = "idle"

    # -- timeouts ----------------------------------------------------------

    def _enter(self, phase: _Phase) -> None:
        self._phase = phase
        self._started = self.loop.time()
        deadline = self._deadline()
        if deadline is not None and (self._timer is None or self._timer_at > deadline + 0.5):
            self._arm(deadline)

    def _arm(self, deadline: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = self.loop.call_at(deadline, self._check)

    def _deadline(self) -> float | None:
        limits = self.limits
        if self._phase == "head":
            return self._started + limits.header_timeout
        if self._phase == "body":
            cycle = self.cycle
            if cycle is None or not cycle.more_body or (cycle.response_complete and _held(cycle) is None):
                return None  # the body is complete: the answer has no deadline here
            return min(self._started + limits.body_timeout, self._last_body + limits.body_idle_timeout)
        if self._phase == "drain":
            return self._started + limits.drain_timeout
        return None

    def _check(self) -> None:
        """The connection's timer: act if the current phase is past its deadline."""
        self._timer = None
        deadline = self._deadline()
        if deadline is None or self.transport.is_closing():
            return
        now = self.loop.time()
        if self._phase == "body" and self.flow.read_paused:
            # The app is not reading (its buffer is full): not the client's silence.
            self._last_body = now
            deadline = self._deadline()
            assert deadline is not None
        if now < deadline:
            self._arm(deadline)
            return
        limits = self.limits
        if self._phase == "head":
            if not self._head_seen:
                self.transport.close()  # connected and sent nothing: nothing to answer
            else:
                self._refuse(
                    408,
                    "head_timeout",
                    f"Request headers not received within {limits.header_timeout:g} s; "
                    "send the whole request head at once.",
                )
        elif self._phase == "body" and (held := _held(self.cycle)) is not None:
            # The body did not come in time: the answer waited for it long enough.
            held.release()
        elif self._phase == "body":
            slow = "silent for" if now - self._last_body >= limits.body_idle_timeout else "longer than"
            seconds = limits.body_idle_timeout if slow == "silent for" else limits.body_timeout
            self._refuse(
                408,
                "body_timeout",
                f"Request body too slow: {slow} {seconds:g} s. Send the body without pauses.",
            )
        else:
            self.transport.close()

    # -- refusals and the lingering close ----------------------------------

    def _too_long_url(self) -> str:
        return (
            f"URL too long: more than {self.limits.max_url_bytes} bytes. "
            "Send long data in the request body."
        )

    def _too_large_head(self) -> str:
        return (
            f"Request headers too large: more than {self.limits.max_header_bytes} bytes. "
            "Send fewer or shorter headers (and cookies)."
        )

    def _refuse(self, status: int, reason: str, message: str) -> None:
        """Answer ``status`` (unless an answer has started: then cut), then close lingering."""
        cycle = self.cycle
        started = cycle is not None and cycle.response_started and not cycle.response_complete
        if cycle is not None and not cycle.response_complete:
            # The app (if it runs) sees the client gone and writes nothing more.
            cycle.disconnected = True
            cycle.message_event.set()
        if started:
            self.transport.close()
            return
        self.transport.write(_error_bytes(status, message))
        self.linger()
        if cycle is not None and not cycle.response_complete:
            # The app has this request: its access line says it was refused.
            cycle.scope[REFUSED_KEY] = self._refusal(status, reason, message, cycle.scope)  # type: ignore[literal-required]
        else:
            self._report(self._refusal(status, reason, message, self.scope))

    def _refusal(self, status: int, reason: str, message: str, scope: Any) -> Refusal:
        method = scope.get("method", "") if scope else ""
        if not method:
            try:
                method = self.parser.get_method().decode("ascii", "replace")
            except Exception:  # the request line did not get that far
                method = ""
        known = scope if scope else {"client": self.client, "headers": []}
        return Refusal(status, reason, message, method, known, self.loop.time() - self._request_began)

    def _report(self, refusal: Refusal) -> None:
        """The app's observer records ``refusal``; without one (not our app), a log line."""
        observer: Callable[[Refusal], None] | None = self.app_state.get(REFUSAL_OBSERVER)
        if observer is not None:
            observer(refusal)
        else:
            client = refusal.scope.get("client")
            log_access(
                refusal.method, "other", refusal.status, duration=refusal.duration, sent=0,
                client=str(client[0]) if client else "unknown", outcome="refused",
                reason=refusal.reason, error=refusal.message,
            )

    def linger(self) -> None:
        """Shut our sending side, read and drop what the client still sends, then close."""
        if self._phase == "drain" or self.transport.is_closing():
            return
        self._drained = 0
        self._enter("drain")
        self.flow.resume_reading()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        else:  # pragma: no cover - TLS transports cannot half-close
            self.transport.close()

    async def _busy_app(self, scope: Any, receive: Any, send: Any) -> None:
        message = (
            f"The server has too many open connections (limit {self.limits.max_connections}); "
            "retry in a moment."
        )
        body = json.dumps({"error": {"message": message}}).encode()
        await send({"type": "http.response.start", "status": 503, "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", b"1"),
            (b"connection", b"close"),
        ]})
        await send({"type": "http.response.body", "body": body})
        self._report(self._refusal(503, "too_many_connections", message, scope))


class _LingeringTransport:
    """What an early answer's cycle writes to and closes: a lingering close instead of a
    reset, and, while ``held``, the answer kept until ``release`` (the body is in)."""

    def __init__(self, transport: asyncio.Transport, protocol: LimitedHttpProtocol, *, hold: bool) -> None:
        self._transport = transport
        self._protocol = protocol
        self._held: list[bytes] | None = [] if hold else None
        self._close_due = False

    @property
    def held(self) -> bool:
        return self._held is not None

    def release(self) -> None:
        """Send what was held, and close (lingering) if the answer is complete."""
        held, self._held = self._held, None
        if held and not self._transport.is_closing():
            self._transport.write(b"".join(held))
        if self._close_due:
            self._protocol.linger()

    def write(self, data: bytes) -> None:
        if self._held is not None:
            self._held.append(data)
        else:
            self._transport.write(data)

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def close(self) -> None:
        if self._held is not None:
            self._close_due = True
        else:
            self._protocol.linger()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)


def _held(cycle: RequestResponseCycle | None) -> _LingeringTransport | None:
    """``cycle``'s transport if it holds the answer until the body is in, else None."""
    transport = getattr(cycle, "transport", None)
    return transport if isinstance(transport, _LingeringTransport) and transport.held else None


_CONNECTION_CLOSE = (b"connection", b"close")


def _closing(message: Any) -> Any:
    """``http.response.start`` ``message`` saying ``Connection: close`` (once)."""
    headers = [(name, value) for name, value in message.get("headers", []) if name.lower() != b"connection"]
    return {**message, "headers": [*headers, _CONNECTION_CLOSE]}


class _Cycle(RequestResponseCycle):
    """uvicorn's request cycle, for the requests that need more than it does.

    A body with a Content-Length that the app asks for is read whole: the app gets it
    in one message, joined once, and reading is not paused on the way (the app asks
    for a body only once it accepted its declared size: ``guard.admit``). uvicorn
    wakes the app and pauses reading for every 64 KiB, and copies each piece twice
    (llhttp's ``on_body``, then its buffer); here what arrives once the app has asked
    is kept as received (``LimitedHttpProtocol._take_body``). A chunked body, whose
    size is known only as it comes, still arrives piece by piece, so that the app can
    refuse it (413) as soon as it passes the limit.

    An answer started before the body has all arrived closes (lingering). An answer to
    HTTP/1.0 (which has no chunked framing, RFC 9112 section 7.1) without a
    Content-Length is close-delimited: its body as it comes, then the close.
    """

    _close_delimited = False
    #: The request's Content-Length (None: chunked).
    declared_length: int | None = None
    #: The body's pieces while it is read whole (None: uvicorn's message per piece).
    pieces: list[bytes | bytearray] | None = None
    #: Body bytes the parser has passed on so far.
    received = 0
    #: Body bytes still to come while it is read whole (taken as they come, past the parser).
    left = 0

    async def receive(self) -> Any:
        if self.pieces is None:
            if (self.declared_length is None or not self.more_body or self.disconnected
                    or self.response_complete):
                return await super().receive()
            # What came before the app asked (up to 64 KiB, reading paused) goes first.
            self.pieces = [self.body] if self.body else []
            self.body = bytearray()
            self.left = self.declared_length - self.received
        # uvicorn's receive, but woken once: when the body is whole (or the client gone).
        if self.waiting_for_100_continue and not self.transport.is_closing():
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.waiting_for_100_continue = False
        self.flow.resume_reading()
        while self.more_body and not (self.disconnected or self.response_complete):
            await self.message_event.wait()
            self.message_event.clear()
        pieces, self.pieces = self.pieces or [], None
        if self.disconnected or self.response_complete:
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": b"".join(pieces), "more_body": False}

    async def send(self, message: Any) -> None:
        if not self.response_started and message["type"] == "http.response.start":
            if self.more_body:
                protocol = self.transport.get_protocol()
                if isinstance(protocol, LimitedHttpProtocol):
                    # The body will not be read (a 413, say): answer, then close lingering;
                    # when little of it is still to come, answer once it is in (see above).
                    self.keep_alive = False
                    # (Not a client waiting for "100 Continue": it sends no body now.)
                    left = None if self.declared_length is None else self.declared_length - self.received
                    hold = left is not None and left <= HOLD_BYTES and not self.waiting_for_100_continue
                    self.transport = _LingeringTransport(self.transport, protocol, hold=hold)  # type: ignore[assignment]
                    message = _closing(message)  # said by us: uvicorn 0.51 does not for keep_alive
            if self.scope["http_version"] == "1.0":
                message = self._for_http_1_0(message)
        elif self._close_delimited and message["type"] == "http.response.body":
            # uvicorn counts a body down from its Content-Length: this piece's length, and
            # one byte more while more are coming, lets it write the piece as it is.
            self.expected_content_length = len(message.get("body", b"")) + bool(message.get("more_body"))
        await super().send(message)

    def _for_http_1_0(self, message: Any) -> Any:
        self.keep_alive = False  # uvicorn closes after an HTTP/1.0 answer: say so
        headers = [
            (name, value) for name, value in _closing(message)["headers"]
            if name.lower() != b"transfer-encoding"
        ]
        has_length = any(name.lower() == b"content-length" for name, _ in headers)
        if not (has_length or self.scope["method"] == "HEAD" or message["status"] in (204, 304)):
            self.chunked_encoding = False
            self._close_delimited = True
        return {**message, "headers": headers}
