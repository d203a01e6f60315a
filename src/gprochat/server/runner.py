"""Run the server: in the foreground (``gprochat serve``) or in a background thread.

``BackgroundServer`` binds 127.0.0.1 on a free port and serves from a thread of
this process: ``gprochat chat --local`` and the tests use it.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from types import TracebackType
from typing import Any, Optional

import uvicorn

from .app import create_app
from .config import ServerConfig

__all__ = ["BackgroundServer", "serve"]


def _uvicorn_config(app: Any, **options: Any) -> uvicorn.Config:
    options.setdefault("log_level", "warning")
    return uvicorn.Config(app, lifespan="on", access_log=False, **options)


def serve(config: ServerConfig, *, host: str = "127.0.0.1", port: int = 8000, **options: Any) -> None:
    """Serve in the foreground until interrupted."""
    uvicorn.Server(_uvicorn_config(create_app(config), host=host, port=port, **options)).run()


class BackgroundServer:
    """A server in a daemon thread on an ephemeral loopback port.

    >>> with BackgroundServer(ServerConfig()) as server:
    ...     print(server.base_url)
    http://127.0.0.1:...
    """

    def __init__(
        self, config: Optional[ServerConfig] = None, *, app: Any = None, host: str = "127.0.0.1"
    ) -> None:
        self.app = app if app is not None else create_app(config or ServerConfig())
        self.host = host
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, 0))
        self.port: int = self._socket.getsockname()[1]
        self._server = uvicorn.Server(_uvicorn_config(self.app))
        self._server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self._thread = threading.Thread(target=self._run, name="gprochat-server", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _run(self) -> None:
        asyncio.run(self._server.serve(sockets=[self._socket]))

    def start(self) -> "BackgroundServer":
        self._thread.start()
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the gprochat server failed to start; see the log above")
            threading.Event().wait(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()

    def __enter__(self) -> "BackgroundServer":
        return self.start()

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.stop()
