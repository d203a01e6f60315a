"""Time limits for a call: connect, idle read, and an optional total.

``timeout=`` per call takes a ``Timeout``, a number (the connect and the read limit,
as in httpx and openai-python) or ``None`` (the environment, then the defaults).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, replace
from typing import Optional, Union

import aiohttp

from ..errors import ConfigurationError

__all__ = ["Timeout", "TimeoutSetting", "resolve_timeout", "DEFAULT_TIMEOUT"]

_ENV = {
    "connect": "GPROCHAT_CONNECT_TIMEOUT",
    "read": "GPROCHAT_READ_TIMEOUT",
    "total": "GPROCHAT_TOTAL_TIMEOUT",
}
_DISABLED = {"", "none", "off"}


@dataclass(frozen=True)
class Timeout:
    """Seconds each limit allows; ``None`` turns a limit off.

    ``connect``: to open the connection (through the proxy, if any).
    ``read``: the longest silence allowed between two pieces of the answer
    (and before the first one), so a slow but steady stream never times out.
    ``total``: the whole call, retries and their waits included.

    >>> Timeout(read=120)
    Timeout(connect=10.0, read=120, total=None)
    """

    connect: Optional[float] = 10.0
    read: Optional[float] = 60.0
    total: Optional[float] = None

    def __post_init__(self) -> None:
        for limit in ("connect", "read", "total"):
            value = getattr(self, limit)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ConfigurationError(
                    f"Timeout {limit}={value!r} is invalid: give a number of seconds above 0, "
                    "or None for no limit"
                )

    def for_attempt(self, remaining: Optional[float]) -> aiohttp.ClientTimeout:
        """aiohttp's limits for one request, ``remaining`` seconds being left of the total."""
        if remaining is None:
            return self._without_total
        return aiohttp.ClientTimeout(
            total=remaining,
            connect=self.connect,
            sock_connect=self.connect,
            sock_read=self.read,
        )

    @functools.cached_property
    def _without_total(self) -> aiohttp.ClientTimeout:
        # Made once per Timeout (frozen, so it never changes): most calls have no total.
        return aiohttp.ClientTimeout(
            total=None, connect=self.connect, sock_connect=self.connect, sock_read=self.read
        )


DEFAULT_TIMEOUT = Timeout()

TimeoutSetting = Union[Timeout, float, int, None]

# The Timeout each combination of the three environment variables' raw values gives.
_from_environment: dict[tuple[Optional[str], Optional[str], Optional[str]], Timeout] = {}


def resolve_timeout(value: TimeoutSetting) -> Timeout:
    """The ``Timeout`` a call uses, from its ``timeout=`` and the environment."""
    if isinstance(value, Timeout):
        return value
    # The environment is read on every call (it may change between calls); only
    # the parsing of the values seen is remembered.
    raw = (os.environ.get(_ENV["connect"]), os.environ.get(_ENV["read"]), os.environ.get(_ENV["total"]))
    base = _from_environment.get(raw)
    if base is None:
        base = replace(
            DEFAULT_TIMEOUT,
            **{limit: _from_env(name, getattr(DEFAULT_TIMEOUT, limit)) for limit, name in _ENV.items()},
        )
        if len(_from_environment) < 64:
            _from_environment[raw] = base
    if value is None:
        return base
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(
            f"timeout={value!r} is invalid: pass seconds (a number) or "
            "gprochat.Timeout(connect=..., read=..., total=...)"
        )
    return replace(base, connect=value, read=value)


def _from_env(name: str, default: Optional[float]) -> Optional[float]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    if raw.strip().lower() in _DISABLED:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if seconds <= 0:
        raise ConfigurationError(
            f"{name}={raw!r} is invalid: set seconds above 0, or 'none' for no limit"
        )
    return seconds
