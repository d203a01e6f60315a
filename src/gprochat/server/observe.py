"""ASGI middleware: one access-log line and the request metrics per HTTP request.

Pure ASGI (not ``BaseHTTPMiddleware``) so that streamed bodies pass through chunk
by chunk and the time to first byte is measured where it is sent.

``outcome`` says how the exchange ended: ``complete`` (the whole response was sent),
``client_gone`` (the client hung up mid-answer; logged and counted with status 499,
nginx's convention), ``aborted`` (the server cut the answer: the backend failed
mid-answer, or a shutdown ran out of time).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .guard import Network, client_address_of_scope
from .logs import access_logger
from .metrics import ServerMetrics

__all__ = ["CLIENT_GONE", "OUTCOME_KEY", "ObserveMiddleware"]

#: The scope key a response sets to report how it ended, when it knows better.
OUTCOME_KEY = "gprochat.outcome"
CLIENT_GONE = "client_gone"
CLIENT_GONE_STATUS = 499


class ObserveMiddleware:
    """Counts requests by route and status, body bytes and time to first byte; logs access."""

    def __init__(
        self, app: ASGIApp, *, metrics: ServerMetrics, trusted_proxies: tuple[Network, ...] = ()
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.trusted_proxies = trusted_proxies
        # labels() takes a lock and builds a key per call; the label sets are few.
        self._children: dict[tuple[str, str, str], tuple[Any, Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
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

        try:
            await self.app(scope, receive, observed_send)
            outcome = scope.get(OUTCOME_KEY, outcome)
            if outcome == CLIENT_GONE:
                status = CLIENT_GONE_STATUS
        except BaseException:
            outcome = "aborted"
            raise
        finally:
            # The router records the matched route in the scope (shared, mutated in place).
            route = str(getattr(scope.get("route"), "path", None) or "other")
            self._record(scope, route, status, sent, first_byte, started, outcome)

    def _record(
        self, scope: Scope, route: str, status: int, sent: int,
        first_byte: float | None, started: float, outcome: str,
    ) -> None:
        method = scope.get("method", "")
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
        if not access_logger.isEnabledFor(logging.INFO):
            return
        extra: dict[str, Any] = {
            "method": method,
            "route": route,
            "status": status or None,
            "duration_ms": round((time.perf_counter() - started) * 1000, 1),
            "bytes": sent,
            "client": client_address_of_scope(scope, self.trusted_proxies),
            "outcome": outcome,
        }
        if first_byte is not None:
            extra["ttfb_ms"] = round(first_byte * 1000, 1)
        access_logger.info("%s %s %s", method, route, status or "-", extra=extra)

