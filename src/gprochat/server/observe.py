"""ASGI middleware: one access-log line and the request metrics per HTTP request.

Pure ASGI (not ``BaseHTTPMiddleware``) so that streamed bodies pass through chunk
by chunk and the time to first byte is measured where it is sent. It also sees every
exception first, so it is where the front door's error answers are sent
(``answer_error``, from ``front.py``): one wrapper of ``send`` per request, not two.

``outcome`` says how the exchange ended: ``complete`` (the whole response was sent),
``client_gone`` (the client hung up mid-answer; logged and counted with status 499,
nginx's convention), ``aborted`` (the server cut the answer: the backend failed
mid-answer, or a shutdown ran out of time), ``refused`` (the HTTP layer answered an
error itself: a head or body too slow, a URL too long; the line has its ``reason``
and the ``error`` the client was told).

The HTTP layer's refusals reach this middleware through the lifespan state: at
start-up it puts ``record_refusal`` there (``http.REFUSAL_OBSERVER``), so that a
request refused before routing is logged and counted like any other (route
``other``), and also in ``gprochat_http_refusals_total{status,reason}``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Optional

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .backends.router import ANSWERED_BY
from .guard import Network, client_address_of_scope
from .http import REFUSAL_OBSERVER, REFUSED_KEY, Refusal
from .logs import log_access
from .metrics import ServerMetrics

__all__ = ["CLIENT_GONE", "OUTCOME_KEY", "ObserveMiddleware"]

#: The response for an exception raised before the response started, and whether the
#: exception is a bug (then re-raised after the answer, so the server logs it).
ErrorAnswer = Callable[[Exception, Scope], tuple[Response, bool]]

#: The scope key a response sets to report how it ended, when it knows better.
OUTCOME_KEY = "gprochat.outcome"
CLIENT_GONE = "client_gone"
CLIENT_GONE_STATUS = 499


class ObserveMiddleware:
    """Counts requests by route and status, body bytes and time to first byte; logs access."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: ServerMetrics,
        trusted_proxies: tuple[Network, ...] = (),
        answer_error: Optional[ErrorAnswer] = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.trusted_proxies = trusted_proxies
        self.answer_error = answer_error
        # labels() takes a lock and builds a key per call; the label sets are few.
        self._children: dict[tuple[str, str, str], tuple[Any, Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan" and isinstance(scope.get("state"), dict):
                scope["state"][REFUSAL_OBSERVER] = self.record_refusal
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0
        sent = 0
        first_byte: float | None = None
        outcome = "complete"

        async def observed_send(message: Message) -> None:
            nonlocal status, sent, first_byte
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                body = message.get("body", b"")
                if body and first_byte is None:
                    first_byte = time.perf_counter() - started
                sent += len(body)
            await send(message)

        answered = False  # an error answer was sent in full, then the bug re-raised
        try:
            try:
                await self.app(scope, receive, observed_send)
            except Exception as exc:
                # After the response started, the exception cuts the connection: how a
                # client learns that a streamed answer is incomplete.
                if status or self.answer_error is None:
                    raise
                response, is_bug = self.answer_error(exc, scope)
                await response(scope, receive, observed_send)
                answered = True
                if is_bug:
                    raise
            outcome = scope.get(OUTCOME_KEY, outcome)
            if outcome == CLIENT_GONE:
                status = CLIENT_GONE_STATUS
        except BaseException:
            if not answered:
                outcome = "aborted"
            raise
        finally:
            # The path a route serves labels the log and metrics, not the (unbounded)
            # URL: from the route a handler recorded, or from our endpoints (front.py),
            # which the router puts in the scope.
            route = str(
                getattr(scope.get("route"), "path", None)
                or getattr(scope.get("endpoint"), "route_path", None)
                or "other"
            )
            refusal: Refusal | None = scope.get(REFUSED_KEY)
            if refusal is not None:  # the HTTP layer answered (a body too slow), not the app
                self._record(scope, route, refusal.status, 0, None, time.perf_counter() - started,
                             "refused", refusal)
            else:
                self._record(scope, route, status, sent, first_byte,
                             time.perf_counter() - started, outcome)

    def record_refusal(self, refusal: Refusal) -> None:
        """Log and count a request the HTTP layer refused before routing (``http.py``)."""
        self._record(refusal.scope, "other", refusal.status, 0, None, refusal.duration,
                     "refused", refusal, method=refusal.method)

    def _record(
        self, scope: Scope, route: str, status: int, sent: int, first_byte: float | None,
        duration: float, outcome: str, refusal: Refusal | None = None, method: str | None = None,
    ) -> None:
        method = scope.get("method", "") if method is None else method
        shown_status = str(status) if status else "none"
        children = self._children.get((method, route, shown_status))
        if children is None:
            children = self._children[(method, route, shown_status)] = (
                self.metrics.requests.labels(method, route, shown_status),
                self.metrics.bytes_streamed.labels(route),
                self.metrics.time_to_first_byte.labels(route),
            )
        requests, bytes_streamed, time_to_first_byte = children
        requests.inc()
        bytes_streamed.inc(sent)
        if first_byte is not None and status == 200:
            time_to_first_byte.observe(first_byte)
        more: dict[str, str] = {}
        if refusal is not None:
            self.metrics.refusals.labels(str(refusal.status), refusal.reason).inc()
            more = {"reason": refusal.reason, "error": refusal.message}
        deployment = ANSWERED_BY.get()
        if deployment is not None:
            more["deployment"] = deployment  # the router's deployment that answered
        log_access(
            method, route, status, duration=duration, sent=sent,
            client=client_address_of_scope(scope, self.trusted_proxies), outcome=outcome,
            first_byte=first_byte, **more,
        )

