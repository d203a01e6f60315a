"""Server settings: one object, filled from CLI flags or environment variables."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from ..protocol import DEFAULT_SECRET_KEY

__all__ = ["ServerConfig"]


@dataclass
class ServerConfig:
    """Everything ``create_app`` needs to know.

    ``passwords`` empty means no site password; ``system_prompt`` is prepended to
    every conversation; ``backend`` names the model backend and ``backend_options``
    are passed to its constructor.
    """

    secret_key: str = DEFAULT_SECRET_KEY
    passwords: tuple[str, ...] = ()
    check_signature: bool = True
    backend: str = "echo"
    backend_options: dict[str, Any] = field(default_factory=dict)
    system_prompt: Optional[str] = None
    # The OpenAI-compatible gateway (/v1): on by default. ``api_keys`` empty means open;
    # ``relay_url`` set means answers come from that GeminiProChat deployment instead
    # of ``backend``, signed with ``relay_secret_key`` and ``relay_password``.
    gateway: bool = True
    api_keys: tuple[str, ...] = ()
    relay_url: Optional[str] = None
    relay_secret_key: Optional[str] = None
    relay_password: Optional[str] = None

    @staticmethod
    def split_passwords(value: Optional[str]) -> tuple[str, ...]:
        """``"a, b"`` -> ``("a", "b")``: the comma-separated list GeminiProChat accepts."""
        if not value:
            return ()
        return tuple(part.strip() for part in value.split(",") if part.strip())
