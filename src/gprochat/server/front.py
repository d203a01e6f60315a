"""The front door: one Starlette router for every route, and one way a refusal is answered.

``App`` is Starlette with a leaner stack: the router, wrapped by ``ObserveMiddleware``
(access log, metrics, error answers), pure ASGI. Routes are ``route(path, func)``:
``func(request) -> Response``, without the two wrappers and the exception-handler
lookup Starlette puts around each function endpoint (that per-request machinery is
what B3 measures; docs/benchmarks.md).

``answer_error`` answers an exception raised before the response has started:

- ``Rejected`` (the guard), Starlette's ``HTTPException`` (404, 405 with ``Allow``):
  with their status;
- anything else: 500 (then re-raised, so the server logs the traceback);

in the route's error shape: OpenAI's ``{"error": {"message", "type", "param",
"code"}}`` under ``/v1``, the protocol's ``{"error": {"message": ...}}`` elsewhere.
After the response has started, an exception propagates and the server cuts the
connection: how a client learns that a streamed answer is incomplete.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Optional

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Lifespan, Receive, Scope, Send

from .. import protocol
from .guard import Network, Rejected
from .metrics import ServerMetrics
from .observe import ObserveMiddleware

__all__ = ["App", "answer_error", "error_response", "openai_error_body", "openai_error_response", "route"]

Handler = Callable[[Request], Awaitable[Response]]

GATEWAY_PREFIX = "/v1"

_OPENAI_KINDS = {
    401: ("invalid_request_error", "invalid_api_key"),
    404: ("invalid_request_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    413: ("invalid_request_error", "request_too_large"),
    429: ("rate_limit_exceeded", "rate_limit_exceeded"),
    503: ("server_error", "server_busy"),
}


def error_response(
    status: int, message: str, code: object = None, headers: Optional[dict[str, str]] = None
) -> Response:
    """The protocol's ``{"error": {...}}`` body with ``status``."""
    return Response(
        protocol.error_body(message, code),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def openai_error_body(
    status: int,
    message: str,
    *,
    type: Optional[str] = None,
    param: Optional[str] = None,
    code: Optional[str] = None,
) -> dict[str, Any]:
    """OpenAI's ``{"error": {"message", "type", "param", "code"}}`` for ``status``.

    ``type`` and ``code`` default from the status (``server_error`` for 5xx).
    """
    default_type, default_code = _OPENAI_KINDS.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", None)
    )
    return {
        "error": {
            "message": message,
            "type": type or default_type,
            "param": param,
            "code": code or default_code,
        }
    }


def openai_error_response(
    status: int,
    message: str,
    *,
    type: Optional[str] = None,
    param: Optional[str] = None,
    code: Optional[str] = None,
    headers: Optional[dict[str, str]] = None,
) -> Response:
    """``openai_error_body`` as a JSON response with ``status``."""
    body = openai_error_body(status, message, type=type, param=param, code=code)
    return Response(
        json.dumps(body, ensure_ascii=False),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


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

    In the route's error shape: OpenAI's under ``/v1``, the protocol's elsewhere.
    """
    openai = scope["path"].startswith(GATEWAY_PREFIX + "/")
    if isinstance(exc, Rejected):
        status, message, headers = exc.status, exc.message, exc.headers
    elif isinstance(exc, HTTPException):
        status, headers = exc.status_code, dict(exc.headers or {})
        message = _HTTP_MESSAGES.get(status, exc.detail)
    else:
        status, headers = 500, {}
        message = "Internal server error: the server failed (its log has the details)."
    if openai:
        return openai_error_response(
            status, message, headers=headers, type=getattr(exc, "type", None),
            param=getattr(exc, "param", None), code=getattr(exc, "code", None),
        ), status == 500
    return error_response(status, message, headers=headers), status == 500


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
