"""The ASGI application: ``create_app(config)``.

One Starlette router serves every route (``front.App``): ``/api/generate``,
``/api/auth``, ``/api/models``, ``/healthz``, ``/metrics``, the OpenAI gateway under
``/v1`` and its schema at ``/openapi.json``. ``app.state`` holds what routes share: ``config``,
``backend``, ``guard`` (``RequestGuard``: every route's admission), ``replay``
(``ReplayGuard``), ``shared_state`` (memory or Redis) and ``metrics``. A route raises
``refusals.Refusal`` to refuse a request; the front door answers it in the route's error
shape. More routes (a web page at ``/``) are added to ``app.router.routes``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from .. import __version__
from .backends import Backend, RelayBackend, create_backend
from .backends._router_config import build_router
from .backends.router import RouterBackend
from .config import ServerConfig
from .front import App, route
from .gateway import gateway_routes
from .gateway.openapi import openapi_json
from .guard import FailurePolicy, RateLimiter, RequestGuard, StreamLimiter, parse_networks
from .logs import install_abort_filter
from .metrics import ServerMetrics
from .replay import ReplayGuard
from .routes import StreamAborted, auth, generate, models
from .stores import SharedState
from .web import install_web

__all__ = ["create_app"]


def create_app(config: ServerConfig | None = None, backend: Backend | None = None) -> Starlette:
    """A GeminiProChat-compatible server.

    ``backend`` overrides the one the config chooses (tests pass scripted ones): the
    router (``config.router``), a ``RelayBackend`` (``config.relay_url``), else
    ``config.backend``.
    """
    config = config or ServerConfig()
    backend = backend or _server_backend(config)
    trusted = parse_networks(config.trusted_proxies)
    shared_state = SharedState(config.redis_url, replay_max_entries=config.replay_max_entries)
    policy = FailurePolicy(config.redis_failure)
    metrics = ServerMetrics()
    backend.on_queue_change = metrics.backend_queued.inc
    if isinstance(backend, RouterBackend):
        backend.on_event = metrics.count_deployment_event

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        backend.start()  # a local model loads in the background; /healthz says "loading"
        try:
            yield
        finally:
            await backend.aclose()
            await shared_state.aclose()

    guard = RequestGuard(
        rate_limiter=RateLimiter(config.rate_limit, shared_state, policy, trusted),
        streams=StreamLimiter(
            config.max_streams,
            retry_after=config.busy_retry_after,
            on_change=metrics.streams_in_flight.inc,
        ),
        max_body_bytes=config.max_body_bytes,
        max_messages=config.max_messages,
        max_image_bytes=config.max_image_bytes,
        max_images=config.max_images,
        max_parts=config.max_parts,
        max_message_chars=config.max_message_chars,
        passwords=config.passwords,
        api_keys=config.api_keys,
    )

    async def healthz(request: Request) -> Response:
        redis_ok = await shared_state.ping()
        body = {
            "status": "ok",
            "version": __version__,
            "backend": backend.name,
            "state": shared_state.backend_name,
            "streams_in_flight": guard.streams.in_flight,
        }
        status = 200
        if backend.status != "ready":
            # Loading (or failed to load) its model: not ready for traffic yet.
            body["status"] = "loading" if backend.status == "loading" else "unavailable"
            body["backend_status"] = backend.status
            status = 503
        if isinstance(backend, RouterBackend):
            body["deployments"] = await backend.deployments_health()
        if redis_ok is not None:
            body["redis"] = "ok" if redis_ok else "unreachable"
            if not redis_ok:
                # Fail-closed refuses every request without Redis: take this node out.
                body["status"] = "degraded" if config.redis_failure == "open" else "unavailable"
                status = 200 if config.redis_failure == "open" else 503
        return JSONResponse(body, status_code=status)

    async def prometheus_metrics(request: Request) -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    routes: list[BaseRoute] = [
        route("/api/generate", generate, ["POST"]),
        route("/api/auth", auth, ["POST"]),
        route("/api/models", models, ["GET"]),
        route("/healthz", healthz, ["GET"]),
        route("/metrics", prometheus_metrics, ["GET"]),
    ]
    if config.gateway:
        async def openapi(request: Request) -> Response:
            # Generated on the first request (in any app of the process), then kept.
            return Response(openapi_json(), media_type="application/json")

        routes += [*gateway_routes(), route("/openapi.json", openapi, ["GET"])]

    app = App(routes, metrics=metrics, trusted_proxies=trusted, lifespan=lifespan)
    # "/api/generate/" is no path of ours: a 404 in the route's shape, not Starlette's
    # empty 307 to the path without the slash (a client that does not follow it sees
    # nothing; one that does re-sends a body, and its path is then not the one it uses).
    app.router.redirect_slashes = False
    app.state.config = config
    app.state.backend = backend
    app.state.shared_state = shared_state
    app.state.metrics = metrics
    app.state.guard = guard
    app.state.replay = ReplayGuard(config.timestamp_window, shared_state.replay, policy)
    if config.web:
        install_web(app)
    install_abort_filter(StreamAborted)
    return app


def _server_backend(config: ServerConfig) -> Backend:
    """The one source of answers for every route, built as the app is."""
    if config.router is not None:
        return build_router(config.router, redis_url=config.redis_url,
                            max_streams=config.max_streams)
    if config.relay_url:
        return RelayBackend(url=config.relay_url, secret_key=config.relay_secret_key,
                            password=config.relay_password)
    return create_backend(config.backend, **config.backend_options)
