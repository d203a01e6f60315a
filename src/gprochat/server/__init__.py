"""The GeminiProChat-compatible server.

``ServerConfig`` loads without the web stack (uvicorn, starlette); ``create_app``,
``serve`` and ``BackgroundServer`` load it on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import ServerConfig

if TYPE_CHECKING:
    from .app import create_app
    from .runner import BackgroundServer, serve

__all__ = ["create_app", "ServerConfig", "BackgroundServer", "serve"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from .app import create_app

        return create_app
    if name in ("BackgroundServer", "serve"):
        from . import runner

        return getattr(runner, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
