"""Model backends the server can put behind ``/api/generate``.

``create_backend(name, **options)`` builds one by name; ``BACKENDS`` lists the names.
``RouterBackend`` (several deployments behind each model name, built from
``serve --config``'s ``[models]``) and ``RelayBackend`` (another GeminiProChat
deployment) are built by ``_router_config.build_router``.
``resolve_backend("auto", ...)`` picks the default: ``local`` when llama-cpp-python and
a model are installed, else ``echo`` (with the reason, for the start-up line).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Optional

from ._gguf import local_model_unavailable
from .base import AnswerReport, Backend, Conversation, Turn
from .echo import EchoBackend
from .gemini import GeminiBackend
from .local import LocalBackend
from .openai import OpenAIBackend
from .relay import RelayBackend
from .router import RouterBackend

__all__ = [
    "AnswerReport",
    "Backend",
    "Conversation",
    "Turn",
    "EchoBackend",
    "GeminiBackend",
    "OpenAIBackend",
    "LocalBackend",
    "RelayBackend",
    "RouterBackend",
    "BACKENDS",
    "AUTO",
    "create_backend",
    "resolve_backend",
]

logger = logging.getLogger("gprochat.server")

#: The default backend name: ``local`` when it can run here, else ``echo``.
AUTO = "auto"

BACKENDS: dict[str, Callable[..., Backend]] = {
    "echo": EchoBackend,
    "gemini": GeminiBackend,
    "openai": OpenAIBackend,
    "local": LocalBackend,
}

_ECHO_OPTIONS = frozenset({"delay", "words_per_chunk", "repeat"})


def resolve_backend(name: str, options: dict[str, Any]) -> tuple[str, dict[str, Any], Optional[str]]:
    """``(name, options, why_not_local)``: ``auto`` becomes ``local`` or ``echo``.

    ``options`` may hold both backends' options; the chosen one's are kept. The third
    item says why ``auto`` fell back to echo (None otherwise).
    """
    if name != AUTO:
        return name, options, None
    reason = local_model_unavailable(options.get("model_path"))
    if reason is None or (options.get("model_path") and "llama-cpp-python" not in reason):
        # A model named explicitly is used, or fails loudly; never a quiet mirror instead.
        return "local", {k: v for k, v in options.items() if k not in _ECHO_OPTIONS}, None
    return "echo", {k: v for k, v in options.items() if k in _ECHO_OPTIONS}, reason


def create_backend(name: str, **options: Any) -> Backend:
    """Build the backend called ``name`` with its options (unknown names raise ValueError)."""
    name, options, why_not_local = resolve_backend(name, options)
    if why_not_local:
        logger.warning("no local model, so the echo backend answers (a mirror, no model): %s",
                       why_not_local)
    try:
        factory = BACKENDS[name]
    except KeyError:
        known = ", ".join(sorted([*BACKENDS, AUTO]))
        raise ValueError(f"Unknown backend {name!r}; choose one of: {known}") from None
    return factory(**options)
