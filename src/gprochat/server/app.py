"""The ASGI application: ``create_app(config)``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Optional

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from .. import __version__
from .backends import Backend, create_backend
from .config import ServerConfig
from .gateway import install_gateway
from .routes import router

__all__ = ["create_app"]


def create_app(config: Optional[ServerConfig] = None, backend: Optional[Backend] = None) -> FastAPI:
    """A GeminiProChat-compatible server.

    ``backend`` overrides the one ``config.backend`` names (tests pass scripted ones).
    """
    config = config or ServerConfig()
    backend = backend or create_backend(config.backend, **config.backend_options)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await backend.aclose()

    app = FastAPI(
        title="gprochat",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.config = config
    app.state.backend = backend
    app.include_router(router)
    install_gateway(app)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok", "backend": backend.name})

    return app
