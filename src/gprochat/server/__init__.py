"""The GeminiProChat-compatible server."""

from .app import create_app
from .config import ServerConfig
from .runner import BackgroundServer, serve

__all__ = ["create_app", "ServerConfig", "BackgroundServer", "serve"]
