"""The front door: one Starlette router for every route, and one way a refusal is answered.

``App`` is Starlette with a leaner stack: the router, wrapped by ``ObserveMiddleware``
(access log, metrics, error answers), pure ASGI. Routes are ``route(path, func)``:
``func(request) -> Response``, without the two wrappers and the exception-handler
lookup Starlette puts around each function endpoint (that per-request machinery is
what B3 measures; docs/benchmarks.md).

``answer_error`` answers an exception raised before the response has started:

- a ``refusals.Refusal`` (the guard, the routes, the gateway), Starlette's
  ``HTTPException`` (404, 405 with ``Allow``): with their status;
- anything else: 500 (then re-raised, so the server logs the traceback);

in the route's error shape (``refusals.py`` words both): OpenAI's under ``/v1``,
the protocol's ``{"error": {"message": ...}}`` elsewhere.
After the response has started, an exception propagates and the server cuts the
connection: how a client learns that a streamed answer is incomplete.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Lifespan, Receive, Scope, Send

from .guard import Network
from .metrics import ServerMetrics
from .observe import ObserveMiddleware
from .refusals import Refusal

__all__ = ["App", "answer_error", "route"]

Handler = Callable[[Request], Awaitable[Response]]

GATEWAY_PREFIX = "/v1"

class _Endpoint:
    # An ASGI app, so that Starlette's Route calls it directly. The router puts it in
    # the scope ("endpoint"): ``route_path`` labels the access log and the metrics.
    __slots__ = ("func", "route_path")

    def __init__(self, func: Handler, route_path: str) -> None:
        self.func = func
        self.route_path = route_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.func(Request(scope, receive))
        await response(scope, receive, send)


def route(path: str, func: Handler, methods: Sequence[str] = ("GET",)) -> Route:
    """A route serving ``func(request) -> Response``; exceptions go to ``answer_error``.

    ``GET`` routes answer ``HEAD`` too (Starlette's rule).
    """
    return Route(path, _Endpoint(func, path), methods=list(methods))


def answer_error(exc: Exception, scope: Scope) -> tuple[Response, bool]:
    """The answer to ``exc``, raised before the response started, and whether it is a bug.

    In the route's error shape (``Refusal.response``): OpenAI's under ``/v1``, the
    protocol's elsewhere.
    """
    if isinstance(exc, Refusal):
        refusal = exc
    elif isinstance(exc, HTTPException):
        refusal = Refusal(exc.status_code, _HTTP_MESSAGES.get(exc.status_code, exc.detail),
                          dict(exc.headers or {}))
    else:
        refusal = Refusal(500, "Internal server error: the server failed (its log has the details).")
    openai = scope["path"].startswith(GATEWAY_PREFIX + "/")
    return refusal.response(openai=openai), refusal.status == 500


_HTTP_MESSAGES = {
    404: "Not found: no such path on this server (see the README's list of routes).",
    405: "Method not allowed on this path: the Allow header lists the ones it takes.",
}


class App(Starlette):
    """Starlette whose stack is ``ObserveMiddleware(router)``, answering with ``answer_error``.

    Other packages add routes with ``app.router.routes.append(route(...))``; they pass
    the same door, log and metrics.
    """

    def __init__(
        self,
        routes: Sequence[BaseRoute],
        *,
        metrics: ServerMetrics,
        trusted_proxies: tuple[Network, ...],
        lifespan: Lifespan[Any],
    ) -> None:
        super().__init__(routes=routes, lifespan=lifespan)
        self._metrics = metrics
        self._trusted_proxies = trusted_proxies

    def build_middleware_stack(self) -> ASGIApp:
        return ObserveMiddleware(
            self.router,
            metrics=self._metrics,
            trusted_proxies=self._trusted_proxies,
            answer_error=answer_error,
        )
