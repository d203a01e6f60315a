"""Model backends the server can put behind ``/api/generate``.

``create_backend(name, **options)`` builds one by name; ``BACKENDS`` lists the names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .base import AnswerReport, Backend, Conversation, Turn
from .echo import EchoBackend
from .gemini import GeminiBackend
from .openai import OpenAIBackend

__all__ = [
    "AnswerReport",
    "Backend",
    "Conversation",
    "Turn",
    "EchoBackend",
    "GeminiBackend",
    "OpenAIBackend",
    "BACKENDS",
    "create_backend",
]

BACKENDS: dict[str, Callable[..., Backend]] = {
    "echo": EchoBackend,
    "gemini": GeminiBackend,
    "openai": OpenAIBackend,
}


def create_backend(name: str, **options: Any) -> Backend:
    """Build the backend called ``name`` with its options (unknown names raise ValueError)."""
    try:
        factory = BACKENDS[name]
    except KeyError:
        raise ValueError(f"Unknown backend {name!r}; choose one of: {', '.join(sorted(BACKENDS))}") from None
    return factory(**options)
