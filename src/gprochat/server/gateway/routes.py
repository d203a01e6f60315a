"""The gateway's routes for the app's one router, and its start-up warning."""

from __future__ import annotations

import ipaddress
from typing import Optional

from starlette.routing import BaseRoute

from ..config import ServerConfig
from ..front import route
from .chat import create_chat_completion
from .models import ModelRoutes

__all__ = ["gateway_routes", "gateway_warning"]


def gateway_routes() -> list[BaseRoute]:
    """The gateway's routes, for the app's one router (built as the server starts)."""
    models = ModelRoutes()
    return [
        route("/v1/models", models.list_models, ["GET"]),
        route("/v1/models/{model_id:path}", models.retrieve_model, ["GET"]),
        route("/v1/chat/completions", create_chat_completion, ["POST"]),
    ]


def gateway_warning(config: ServerConfig, host: str) -> Optional[str]:
    """The start-up warning for an open gateway on an address others can reach, or None.

    Open: the gateway is on, with no ``--api-key`` and no site password.
    """
    if not config.gateway or config.api_keys or config.passwords or _is_loopback(host):
        return None
    return (
        f"Warning: the OpenAI gateway (/v1) on {host} is open to anyone who can reach it, "
        "and every request spends the backend's quota. Lock it with --api-key KEY (or a site "
        "--password, which it then also takes as a key), or serve with --no-gateway."
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
