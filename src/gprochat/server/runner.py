"""Run the server: in the foreground (``gprochat serve``) or in a background thread.

``serve`` runs uvicorn in this process, or with ``workers > 1`` as several
processes sharing the port; those build their app with ``app_from_environment``
from the serialized config in ``GPROCHAT_SERVER_CONFIG_JSON``.
``BackgroundServer`` binds 127.0.0.1 on a free port and serves from a thread of
this process: ``gprochat chat --local`` and the tests use it.

On SIGTERM/SIGINT uvicorn stops accepting, lets in-flight answers finish for up to
``config.shutdown_timeout`` seconds, then cancels them (the client sees a cut body).
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import shutil
import socket
import tempfile
import threading
from types import TracebackType
from typing import Any

import uvicorn
from starlette.applications import Starlette

from .app import create_app
from .config import CONFIG_ENV_VAR, ServerConfig
from .logs import configure_logging
from .metrics import MULTIPROC_ENV_VAR

__all__ = ["BackgroundServer", "app_from_environment", "freeze_startup_objects", "serve"]

_LOGGING_ENV_VAR = "GPROCHAT_SERVER_LOGGING_JSON"


def _uvicorn_config(app: Any, **options: Any) -> uvicorn.Config:
    options.setdefault("log_level", "warning")
    # proxy_headers off: uvicorn would otherwise believe X-Forwarded-For from 127.0.0.1;
    # the guard decides whom to believe (--trusted-proxy).
    return uvicorn.Config(app, lifespan="on", access_log=False, proxy_headers=False, **options)


def freeze_startup_objects() -> None:
    """Keep what a server process has loaded so far out of the garbage collector's scans.

    Modules, the app and pydantic's schemas live as long as the process. Left in the
    collector's oldest generation, every full collection walks them all, and its
    pause delays the first byte of every stream waiting meanwhile: under 1,000 open
    streams that made the p99 time to first byte 67-72x the unloaded value; frozen,
    7x (benchmark B4, docs/benchmarks.md). Only for a process that is a server.
    """
    gc.collect()
    gc.freeze()


def serve(
    config: ServerConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    log_level: str = "info",
    log_format: str = "json",
    **options: Any,
) -> None:
    """Serve in the foreground until interrupted; ``workers > 1`` forks that many processes."""
    configure_logging(log_level, log_format)
    options.update(
        host=host,
        port=port,
        log_level=log_level,
        log_config=None,  # our configure_logging, not uvicorn's dictConfig
        timeout_graceful_shutdown=config.shutdown_timeout,
    )
    if workers <= 1:
        app = create_app(config)
        freeze_startup_objects()
        uvicorn.Server(_uvicorn_config(app, **options)).run()
        return
    os.environ[CONFIG_ENV_VAR] = config.to_json()
    os.environ[_LOGGING_ENV_VAR] = json.dumps({"level": log_level, "format": log_format})
    own_metrics_dir = None
    if not os.environ.get(MULTIPROC_ENV_VAR):
        # Each worker writes its metric values there; /metrics on any worker sums them.
        own_metrics_dir = tempfile.mkdtemp(prefix="gprochat-metrics-")
        os.environ[MULTIPROC_ENV_VAR] = own_metrics_dir
    try:
        uvicorn.run(
            "gprochat.server.runner:app_from_environment",
            factory=True,
            workers=workers,
            lifespan="on",
            access_log=False,
            proxy_headers=False,
            **options,
        )
    finally:
        if own_metrics_dir:
            shutil.rmtree(own_metrics_dir, ignore_errors=True)


def app_from_environment() -> Starlette:
    """The app a worker process serves: config and logging from environment variables."""
    logging_options = json.loads(os.environ.get(_LOGGING_ENV_VAR, "{}"))
    configure_logging(logging_options.get("level", "info"), logging_options.get("format", "json"))
    text = os.environ.get(CONFIG_ENV_VAR)
    app = create_app(ServerConfig.from_json(text) if text else ServerConfig())
    freeze_startup_objects()
    return app


class BackgroundServer:
    """A server in a daemon thread on an ephemeral loopback port.

    >>> with BackgroundServer(ServerConfig()) as server:
    ...     print(server.base_url)
    http://127.0.0.1:...
    """

    def __init__(
        self, config: ServerConfig | None = None, *, app: Any = None, host: str = "127.0.0.1"
    ) -> None:
        self.app = app if app is not None else create_app(config or ServerConfig())
        self.host = host
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, 0))
        self.port: int = self._socket.getsockname()[1]
        config = getattr(getattr(self.app, "state", None), "config", None)
        self.shutdown_timeout: float | None = getattr(config, "shutdown_timeout", None)
        self._server = uvicorn.Server(
            _uvicorn_config(self.app, timeout_graceful_shutdown=self.shutdown_timeout)
        )
        self._server.install_signal_handlers = lambda: None  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._run, name="gprochat-server", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _run(self) -> None:
        asyncio.run(self._server.serve(sockets=[self._socket]))

    def start(self) -> BackgroundServer:
        self._thread.start()
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the gprochat server failed to start; see the log above")
            threading.Event().wait(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10 + (self.shutdown_timeout or 0))
        self._socket.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
