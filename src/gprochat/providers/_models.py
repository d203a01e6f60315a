"""Model names beyond the provider's stock ones: asked of the deployment, kept a while.

GeminiProChat's protocol has no model field; gprochat's server adds one (``"model":
NAME`` in the body) and lists the names it takes at ``GET /api/models`` (docs/protocol.md).
The provider's stock names (``""``, ``gemini-1.5-pro``, its aliases) are sent as the seed
sends them: no lookup, no ``model`` field. Any other name is looked up here:

======================================  =============================================
the deployment answers /api/models      the request
======================================  =============================================
a list holding the name                 carries ``"model": NAME``
a list without it                       ``ModelNotSupportedError`` naming both lists
404 or no list (a stock GeminiProChat)  ``ModelNotSupportedError`` naming the stock names
401 (no password, or a wrong one)       ``AuthenticationError`` saying to pass the password
others                                  the error its status means (as /api/generate's)
======================================  =============================================

Answers (and 404s) are kept per deployment (its base URL and a digest of its password)
for ``OFFERED_MODELS_TTL`` seconds, as a resolver keeps an address: a deployment's
operator may change its router at any time. A name missing from a kept list is asked
again at once (the deployment may have added it since) before it is refused; a kept 404
(a stock server, which has no list to add to) is not.
"""

from __future__ import annotations

import hashlib
import threading
import time
from typing import TYPE_CHECKING, Optional

import aiohttp

from .. import protocol
from ..errors import AuthenticationError, ModelNotSupportedError, NotFoundError, ProtocolError
from ._http import get_json
from ._proxy import Proxy
from ._timeouts import Timeout

if TYPE_CHECKING:
    from .base import ProviderModelMixin

__all__ = [
    "OFFERED_MODELS_TTL",
    "ModelNotOfferedError",
    "clear_offered_models",
    "is_stock_model",
    "model_not_offered",
    "offered_models",
    "stock_names",
]

OFFERED_MODELS_TTL = 300.0
"""Seconds a deployment's list of models is kept before it is asked again."""

_lock = threading.Lock()
# deployment -> (when it was asked, on the monotonic clock; what it listed)
_offered: dict[tuple[str, str], tuple[float, Optional[tuple[str, ...]]]] = {}
_clock = time.monotonic


def is_stock_model(provider: type[ProviderModelMixin], model: Optional[str]) -> bool:
    """``""``, one of the provider's names or an alias: sent as the seed sends it."""
    return not model or model in provider.get_models() or model in provider.model_aliases


def stock_names(provider: type[ProviderModelMixin]) -> list[str]:
    return provider.get_models() + sorted(provider.model_aliases)


def _key(base_url: str, password: Optional[str]) -> tuple[str, str]:
    return base_url, hashlib.sha256((password or "").encode()).hexdigest()[:16]


async def offered_models(
    session: aiohttp.ClientSession,
    base_url: str,
    *,
    password: Optional[str],
    proxy: Optional[Proxy],
    timeout: Timeout,
    user_agent: str,
    wanted: Optional[str] = None,
) -> Optional[tuple[str, ...]]:
    """The names ``base_url``'s ``/api/models`` lists (default first); ``None`` when it has
    none (a 404: a stock GeminiProChat server). Kept per deployment for
    ``OFFERED_MODELS_TTL`` seconds; asked again at once when a kept list lacks ``wanted``."""
    key = _key(base_url, password)
    with _lock:
        kept = _offered.get(key)
    if kept is not None:
        asked_at, kept_names = kept
        if _clock() - asked_at < OFFERED_MODELS_TTL and (
            wanted is None or kept_names is None or wanted in kept_names
        ):
            return kept_names
    url = base_url + protocol.MODELS_PATH
    headers = {"accept": "application/json", "user-agent": user_agent}
    if password:
        headers["authorization"] = f"Bearer {password}"
    names: Optional[tuple[str, ...]]
    try:
        page = await get_json(session, url, headers=headers, proxy=proxy, timeout=timeout)
    except (NotFoundError, ProtocolError):  # not JSON: a site answering every path with a page
        names = None
    except AuthenticationError as exc:
        said = exc.server_message or str(exc)
        exc.args = (
            f"{url} answered 401 ({said}): the site lists its models only to those with its "
            "password; pass password= (gprochat: --password or GPROCHAT_PASSWORD)",
        )
        raise
    else:
        listed = page.get("models") if isinstance(page, dict) else None
        valid = isinstance(listed, list) and all(isinstance(name, str) for name in listed)
        names = tuple(listed) if valid and listed is not None else None
    with _lock:
        _offered[key] = (_clock(), names)
    return names


class ModelNotOfferedError(ModelNotSupportedError):
    """A deployment does not offer the model asked for (a ``ModelNotSupportedError``).

    ``where`` is the deployment (its URL without credentials), ``why`` what it offers,
    ``stock`` the provider's own names; ``supported`` holds both.
    """

    def __init__(self, model: str, where: str, why: str, stock: list[str], offered: list[str]) -> None:
        super().__init__(model, where, stock + [name for name in offered if name not in stock])
        self.where, self.why, self.stock = where, why, stock
        self.args = (
            f"Model {model!r} is not offered by {where}: {why}; the stock names are "
            f"{', '.join(stock)} (or pass model='' for the default)",
        )


def model_not_offered(
    provider: type[ProviderModelMixin], model: str, where: str, offered: Optional[tuple[str, ...]]
) -> ModelNotOfferedError:
    """The error for ``model`` on the deployment ``where`` (its URL without credentials)."""
    if offered is None:
        why = (f"it offers no other models (it has no {protocol.MODELS_PATH}: a stock "
               "GeminiProChat server answers with its one model)")
    else:
        why = f"it offers {', '.join(offered) or 'none'}"
    return ModelNotOfferedError(model, where, why, stock_names(provider), list(offered or ()))


def clear_offered_models() -> None:
    """Forget what the deployments offer (the next call asks again)."""
    with _lock:
        _offered.clear()
