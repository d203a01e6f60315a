"""``GprochatApp``: FastAPI, with ``POST /api/generate`` served by a direct ASGI path.

Every request through FastAPI passes six middleware layers, the router and the
endpoint machinery before our code runs; for the protocol's hot route that was
most of the server's time per short answer (B3). ``GprochatApp`` answers
``POST /api/generate`` itself, with the same route function, the same checks in
the same order and the same access log and metrics (``ObserveMiddleware``), and
hands every other request (and lifespan) to FastAPI. What FastAPI's layers did
for this route is done here: ``Rejected`` becomes the protocol's error body, an
unexpected exception becomes a plain 500 (then propagates, so uvicorn logs it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from .guard import Rejected
from .routes import error_response

__all__ = ["GprochatApp"]

Endpoint = Callable[[Request], Awaitable[Response]]


class GprochatApp(FastAPI):
    """A FastAPI app whose ``POST path`` goes to ``install_fast_route``'s endpoint directly."""

    _fast_path: str | None = None
    _fast_app: ASGIApp | None = None

    def install_fast_route(
        self, route: BaseRoute, endpoint: Endpoint, wrap: Callable[[ASGIApp], ASGIApp]
    ) -> None:
        """Serve ``POST route.path`` with ``endpoint``; ``wrap`` adds the observing middleware.

        ``route`` is the same endpoint's route on the FastAPI router, which still
        takes what this path does not (other methods, a ``root_path``).
        """
        path = str(getattr(route, "path", ""))

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            # What the router would record: ObserveMiddleware labels metrics by it.
            scope["route"] = route
            await _serve(endpoint, scope, receive, send)

        self._fast_path = path
        self._fast_app = wrap(app)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self._fast_app is not None
            and scope["type"] == "http"
            and scope["path"] == self._fast_path
            and scope["method"] == "POST"
            and not scope.get("root_path")
        ):
            scope["app"] = self
            await self._fast_app(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


async def _serve(endpoint: Endpoint, scope: Scope, receive: Receive, send: Send) -> None:
    try:
        response = await endpoint(Request(scope, receive))
    except Rejected as exc:
        response = error_response(exc.status, exc.message, headers=exc.headers)
    except Exception:
        # As Starlette's ServerErrorMiddleware, but in the protocol's error shape: a 500
        # (nothing was sent yet), then re-raise so the server logs the traceback.
        failed = error_response(500, "Internal server error: the server failed (see its log).")
        await failed(scope, receive, send)
        raise
    # A response that fails once started (a backend failing mid-answer) propagates:
    # the server then cuts the connection, which is how the client learns of it.
    await response(scope, receive, send)
