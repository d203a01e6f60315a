"""The ASGI application: ``create_app(config)``.

``app.state`` holds what routers share: ``config``, ``backend``, ``guard``
(``RequestGuard``: rate limiter, stream limiter, body reader), ``replay``
(``ReplayGuard``), ``shared_state`` (memory or Redis) and ``metrics``. A router
raises ``guard.Rejected`` to refuse a request; the app answers it with the
protocol's ``{"error": {"message": ...}}`` body.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from .. import __version__
from .backends import Backend, create_backend
from .config import ServerConfig
from .fastpath import GprochatApp
from .gateway import install_gateway
from .guard import FailurePolicy, RateLimiter, Rejected, RequestGuard, StreamLimiter, parse_networks
from .logs import install_abort_filter
from .metrics import ServerMetrics
from .observe import ObserveMiddleware
from .replay import ReplayGuard
from .routes import StreamAborted, error_response, generate, router
from .stores import SharedState
from .web import install_web

__all__ = ["create_app"]


def create_app(config: ServerConfig | None = None, backend: Backend | None = None) -> FastAPI:
    """A GeminiProChat-compatible server.

    ``backend`` overrides the one ``config.backend`` names (tests pass scripted ones).
    """
    config = config or ServerConfig()
    backend = backend or create_backend(config.backend, **config.backend_options)
    trusted = parse_networks(config.trusted_proxies)
    shared_state = SharedState(config.redis_url, replay_max_entries=config.replay_max_entries)
    policy = FailurePolicy(config.redis_failure)
    metrics = ServerMetrics()
    backend.on_queue_change = metrics.backend_queued.inc

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        backend.start()  # a local model loads in the background; /healthz says "loading"
        try:
            yield
        finally:
            await backend.aclose()
            await shared_state.aclose()

    app = GprochatApp(
        title="gprochat",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.config = config
    app.state.backend = backend
    app.state.shared_state = shared_state
    app.state.metrics = metrics
    app.state.guard = RequestGuard(
        rate_limiter=RateLimiter(config.rate_limit, shared_state, policy, trusted),
        streams=StreamLimiter(
            config.max_streams,
            retry_after=config.busy_retry_after,
            on_change=metrics.streams_in_flight.inc,
        ),
        max_body_bytes=config.max_body_bytes,
    )
    app.state.replay = ReplayGuard(config.timestamp_window, shared_state.replay, policy)
    app.include_router(router)
    install_gateway(app)
    if config.web:
        install_web(app)
    app.add_middleware(ObserveMiddleware, metrics=metrics, trusted_proxies=trusted)
    # The protocol's hot route skips FastAPI's layers (see fastpath.py); same checks.
    app.install_fast_route(
        next(r for r in router.routes if getattr(r, "path", None) == "/api/generate"),
        generate,
        lambda inner: ObserveMiddleware(inner, metrics=metrics, trusted_proxies=trusted),
    )
    install_abort_filter(StreamAborted)

    @app.exception_handler(Rejected)
    async def rejected(request: Request, exc: Rejected) -> Response:
        return error_response(exc.status, exc.message, headers=exc.headers)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> JSONResponse:
        redis_ok = await shared_state.ping()
        body = {
            "status": "ok",
            "version": __version__,
            "backend": backend.name,
            "state": shared_state.backend_name,
            "streams_in_flight": app.state.guard.streams.in_flight,
        }
        status = 200
        if backend.status != "ready":
            # Loading (or failed to load) its model: not ready for traffic yet.
            body["status"] = "loading" if backend.status == "loading" else "unavailable"
            body["backend_status"] = backend.status
            status = 503
        if redis_ok is not None:
            body["redis"] = "ok" if redis_ok else "unreachable"
            if not redis_ok:
                # Fail-closed refuses every request without Redis: take this node out.
                body["status"] = "degraded" if config.redis_failure == "open" else "unavailable"
                status = 200 if config.redis_failure == "open" else 503
        return JSONResponse(body, status_code=status)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    return app
