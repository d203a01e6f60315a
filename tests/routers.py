"""A router of two echo models, shared by the tests of model names: the server's
(``/api/models``, ``model`` on ``/api/generate``), the provider's, the Client's and the
command line's."""

from __future__ import annotations

from typing import Any

from gprochat.providers import registry
from gprochat.providers._models import clear_offered_models

#: ``alpha`` echoes the message once; ``beta``, the default, twice: an answer says which
#: model gave it.
TWO_ECHO_MODELS: dict[str, Any] = {
    "router": {"default-model": "beta"},
    "models": {
        "alpha": {"deployments": [{"backend": "echo"}]},
        "beta": {"deployments": [{"backend": "echo", "repeat": 2}]},
    },
}


def clear_client_caches() -> None:
    """Forget what deployments offered and how they failed: ports are reused between
    tests, and one test's server must not speak for the next one's."""
    clear_offered_models()
    registry.clear()
