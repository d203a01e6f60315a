"""Server settings: one object, filled from CLI flags, environment variables or a file.

``ServerConfig`` checks every setting when it is built (``__post_init__``): a wrong
value raises ``InvalidSettingError`` naming the setting, before any socket is
opened; ``gprochat serve`` turns it into a usage error (exit 2) naming the flag.

This module imports neither uvicorn nor starlette: ``gprochat serve`` takes its
defaults from here, and ``HttpLimits`` (the HTTP layer's part of the settings) is
defined here for ``http.py`` to use.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import ConfigurationError
from ..images import DEFAULT_MAX_IMAGE_BYTES, DEFAULT_MAX_IMAGES
from ..protocol import DEFAULT_SECRET_KEY

__all__ = [
    "CONFIG_ENV_VAR",
    "LOG_LEVELS",
    "ConfigFile",
    "ConfigFileError",
    "HttpLimits",
    "InvalidSettingError",
    "ServerConfig",
    "read_config_file",
]

#: The environment variable that carries a serialized ``ServerConfig`` to worker
#: processes started by ``gprochat serve --workers N``.
CONFIG_ENV_VAR = "GPROCHAT_SERVER_CONFIG_JSON"

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")

# Upstream connections beyond --max-streams: a stream slot can be handed on a moment
# before the previous answer's connection is back in the pool.
_SPARE_CONNECTIONS = 16


@dataclass(frozen=True)
class HttpLimits:
    """The HTTP layer's timeouts (seconds) and limits (bytes, counts); ``http.py`` says
    what a client that exceeds each one gets."""

    header_timeout: float = 10.0
    body_idle_timeout: float = 10.0
    body_timeout: float = 60.0
    keepalive_timeout: float = 5.0
    max_url_bytes: int = 8192
    max_header_count: int = 100
    max_header_bytes: int = 16384
    max_connections: int = 2048
    drain_bytes: int = 64 * 1024 * 1024
    drain_timeout: float = 10.0


class InvalidSettingError(ConfigurationError):
    """A server setting is wrong; ``setting`` is the ``ServerConfig`` field's name."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(message)
        self.setting = setting


@dataclass
class ServerConfig:
    """Everything ``create_app`` needs to know.

    Protocol: ``passwords`` empty means no site password; ``system_prompt`` is put
    before every conversation; ``backend`` names the model backend and
    ``backend_options`` are passed to its constructor.

    Guard (see ``guard.py``): ``timestamp_window`` seconds either side of the server's
    clock (0 turns the window and replay protection off); ``max_body_bytes``,
    ``max_messages``, ``max_message_chars``, ``max_image_bytes`` (one image, decoded)
    ``max_images`` (history included) and ``max_parts`` (content parts, history
    included) bound a request; ``rate_limit`` is a
    ``limits`` string such as ``"60/minute"`` per client address (``None`` turns it
    off); ``trusted_proxies`` are addresses or networks whose ``X-Forwarded-For`` is
    believed; ``max_streams`` bounds concurrent answers in this process (0: no bound).

    Scale-out: ``redis_url`` moves replay and rate-limit state to Redis;
    ``redis_failure`` says what to do when it is unreachable (``"closed"``: refuse
    with 503, ``"open"``: serve without those checks).

    HTTP layer (``http.py``): ``header_timeout``, ``body_idle_timeout``,
    ``body_timeout``, ``keepalive_timeout``, ``drain_timeout`` (seconds) and
    ``max_url_bytes``, ``max_header_count``, ``max_header_bytes``,
    ``max_connections``, ``drain_bytes``; ``replay_max_entries`` caps the signatures
    remembered in memory.

    Operations: ``host``, ``port`` (0: any free port), ``workers``, ``log_level``,
    ``log_format`` (``auto``: text on a terminal, JSON otherwise); ``shutdown_timeout``
    is how long in-flight streams may run on after a shutdown request before they are
    cut (``None``: wait for them).
    """

    secret_key: str = DEFAULT_SECRET_KEY
    passwords: tuple[str, ...] = ()
    check_signature: bool = True
    backend: str = "echo"
    backend_options: dict[str, Any] = field(default_factory=dict)
    system_prompt: str | None = None

    # The OpenAI-compatible gateway (/v1): on by default. ``api_keys`` empty means open;
    # ``relay_url`` set means every route's answers come from that GeminiProChat
    # deployment (a ``RelayBackend``) instead of ``backend``, signed with
    # ``relay_secret_key`` and ``relay_password``.
    gateway: bool = True
    # The chat page at / (server/web/): on by default.
    web: bool = True
    api_keys: tuple[str, ...] = ()
    relay_url: str | None = None
    relay_secret_key: str | None = None
    relay_password: str | None = None
    # The router (``[models]`` and ``[router]`` of ``serve --config``, as TOML gives them):
    # when set, it is the backend (``backend`` and ``backend_options`` are not used).
    router: dict[str, Any] | None = None

    timestamp_window: float = 300.0
    # Room for one image at max_image_bytes (base64: 4/3 of it) and its conversation.
    max_body_bytes: int = 16 * 1024 * 1024
    max_messages: int = 200
    max_message_chars: int = 100_000
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES
    max_images: int = DEFAULT_MAX_IMAGES
    # Content parts in a request's messages, history included: room for max_messages
    # messages of one text part each plus max_images images, and to spare (a request
    # of too many images is told so by --max-images, not by this).
    max_parts: int = 2000
    # The gateway's remote image URLs (server/gateway/fetch.py): refused unless
    # ``fetch_image_urls``; then fetched within ``max_image_bytes`` and
    # ``image_fetch_timeout`` seconds, from public addresses only.
    fetch_image_urls: bool = False
    image_fetch_timeout: float = 10.0
    rate_limit: str | None = "60/minute"
    trusted_proxies: tuple[str, ...] = ()
    max_streams: int = 64
    busy_retry_after: int = 1

    redis_url: str | None = None
    redis_failure: Literal["open", "closed"] = "closed"
    replay_max_entries: int = 1_000_000

    # The HTTP layer's settings; their defaults are defined once, in ``HttpLimits``.
    header_timeout: float = HttpLimits.header_timeout
    body_idle_timeout: float = HttpLimits.body_idle_timeout
    body_timeout: float = HttpLimits.body_timeout
    keepalive_timeout: float = HttpLimits.keepalive_timeout
    max_url_bytes: int = HttpLimits.max_url_bytes
    max_header_count: int = HttpLimits.max_header_count
    max_header_bytes: int = HttpLimits.max_header_bytes
    max_connections: int = HttpLimits.max_connections
    drain_bytes: int = HttpLimits.drain_bytes
    drain_timeout: float = HttpLimits.drain_timeout

    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    log_level: str = "info"
    log_format: Literal["auto", "json", "text"] = "auto"
    shutdown_timeout: float | None = 10.0

    def __post_init__(self) -> None:
        # Lists arrive from JSON or callers as lists; the dataclass promises tuples.
        self.passwords = tuple(self.passwords)
        self.trusted_proxies = tuple(self.trusted_proxies)
        self.api_keys = tuple(self.api_keys)
        self.log_level = self.log_level.lower() if isinstance(self.log_level, str) else self.log_level
        _check(self)
        self._size_upstream_pool()

    def _size_upstream_pool(self) -> None:
        """An HTTP backend holds one upstream connection per answer: as many as --max-streams.

        Its ``max_connections`` option is set from ``max_streams`` (a few spare for
        connections being released; 0 for no bound) unless ``backend_options`` sets it.
        """
        from .backends import BACKENDS

        if "max_connections" in self.backend_options or self.backend not in BACKENDS:
            return  # set by hand, or "auto" (local or echo: neither has a pool)
        try:
            accepted = inspect.signature(BACKENDS[self.backend]).parameters
        except (TypeError, ValueError):  # pragma: no cover - a builtin without a signature
            return
        if "max_connections" in accepted:
            pool = self.max_streams + _SPARE_CONNECTIONS if self.max_streams else 0
            self.backend_options = {**self.backend_options, "max_connections": pool}

    @staticmethod
    def split_passwords(value: str | None) -> tuple[str, ...]:
        """``"a, b"`` -> ``("a", "b")``: the comma-separated list GeminiProChat accepts."""
        if not value:
            return ()
        return tuple(part.strip() for part in value.split(",") if part.strip())

    def to_json(self) -> str:
        """Serialize, for worker processes (``from_json`` reads it back)."""
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServerConfig:
        data = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})


# -- validation: one table of rules, one message shape ---------------------------

_SECONDS_POSITIVE = ("header_timeout", "body_idle_timeout", "body_timeout", "keepalive_timeout",
                     "drain_timeout", "image_fetch_timeout")
_SECONDS_OR_ZERO = ("timestamp_window",)
_COUNTS = ("max_body_bytes", "max_messages", "max_message_chars", "max_image_bytes",
           "max_images", "max_parts", "max_streams",
           "busy_retry_after", "max_connections", "drain_bytes", "replay_max_entries")
_COUNTS_POSITIVE = ("max_url_bytes", "max_header_count", "max_header_bytes")


def _fail(setting: str, message: str) -> InvalidSettingError:
    return InvalidSettingError(setting, f"{setting}: {message}")


def _number(config: ServerConfig, name: str, *, integer: bool, minimum: float, above: bool) -> None:
    value = getattr(config, name)
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value):
        kind = "a whole number" if integer else "a number of seconds"
        raise _fail(name, f"must be {kind}, not {value!r}")
    if value < minimum or (above and value == minimum):
        bound = f"greater than {minimum:g}" if above else f"at least {minimum:g}"
        raise _fail(name, f"must be {bound}, not {value!r}")


def _strings(config: ServerConfig, name: str) -> None:
    values = getattr(config, name)
    if not all(isinstance(v, str) and v for v in values):
        raise _fail(name, f"must be non-empty strings, not {values!r}")


def _check(config: ServerConfig) -> None:
    """Raise ``InvalidSettingError`` for the first wrong setting of ``config``."""
    for name in _SECONDS_POSITIVE:
        _number(config, name, integer=False, minimum=0, above=True)
    for name in _SECONDS_OR_ZERO:
        _number(config, name, integer=False, minimum=0, above=False)
    for name in _COUNTS:
        _number(config, name, integer=True, minimum=0, above=False)
    for name in _COUNTS_POSITIVE:
        _number(config, name, integer=True, minimum=1, above=False)
    _number(config, "workers", integer=True, minimum=1, above=False)
    _number(config, "port", integer=True, minimum=0, above=False)
    if config.port > 65535:
        raise _fail("port", f"must be from 0 to 65535 (0: any free port), not {config.port}")
    if config.shutdown_timeout is not None:
        _number(config, "shutdown_timeout", integer=False, minimum=0, above=False)
    if not isinstance(config.host, str) or not config.host.strip():
        raise _fail("host", f"must be an address or host name to listen on, not {config.host!r}")
    if config.log_level not in LOG_LEVELS:
        raise _fail("log_level", f"must be one of {', '.join(LOG_LEVELS)}, not {config.log_level!r}")
    if config.log_format not in ("auto", "json", "text"):
        raise _fail("log_format", f"must be 'auto' (text on a terminal), 'json' or 'text', "
                    f"not {config.log_format!r}")
    if config.redis_failure not in ("open", "closed"):
        raise _fail("redis_failure", f"must be 'open' or 'closed', not {config.redis_failure!r}")
    if config.redis_url is not None and not (
        isinstance(config.redis_url, str)
        and config.redis_url.startswith(("redis://", "rediss://", "unix://"))
    ):
        raise _fail("redis_url", f"must start with redis://, rediss:// or unix://, not {config.redis_url!r}")
    if config.relay_url is not None and not (
        isinstance(config.relay_url, str) and config.relay_url.startswith(("http://", "https://"))
    ):
        raise _fail("relay_url", f"must be an http:// or https:// URL, not {config.relay_url!r}")
    if not isinstance(config.secret_key, str) or not config.secret_key:
        raise _fail("secret_key", "must be a non-empty string")
    for name in ("passwords", "api_keys", "trusted_proxies"):
        _strings(config, name)
    if not isinstance(config.backend_options, dict):
        raise _fail("backend_options", f"must be a dict, not {config.backend_options!r}")
    _check_backend_name(config)
    _check_router(config)
    _check_rate_limit(config)
    _check_trusted_proxies(config)


def _check_backend_name(config: ServerConfig) -> None:
    from .backends import AUTO, BACKENDS  # the registry: a new backend needs no change here

    if config.backend not in BACKENDS and config.backend != AUTO:
        known = ", ".join(sorted([*BACKENDS, AUTO]))
        raise _fail("backend", f"unknown backend {config.backend!r}; choose one of: {known}")


def _check_router(config: ServerConfig) -> None:
    if config.router is None:
        return
    from .backends._router_config import RouterSettingError, check_router_settings

    if config.relay_url:
        raise _fail("relay_url", "cannot be used with [models]: declare the relayed deployment "
                    'as one of a model\'s deployments (backend = "relay", url = "...")')
    try:
        check_router_settings(config.router)
    except RouterSettingError as exc:
        raise InvalidSettingError("router", str(exc)) from None


def _check_rate_limit(config: ServerConfig) -> None:
    if config.rate_limit is None:
        return
    from limits import parse

    try:
        parse(config.rate_limit)
    except (ValueError, TypeError) as exc:
        raise _fail(
            "rate_limit",
            f"{config.rate_limit!r} is not a rate such as 60/minute, 5/second or 1000/day ({exc})",
        ) from None


def _check_trusted_proxies(config: ServerConfig) -> None:
    from .guard import parse_networks

    try:
        parse_networks(config.trusted_proxies)
    except ValueError as exc:
        raise _fail("trusted_proxies", f"{exc}; give an IP address or a CIDR network") from None


# -- the configuration file (gprochat serve --config FILE) -------------------------
#
# TOML: settings as top-level keys, named as the command's long options; tables are
# sections. ``[models.NAME]`` (the router's models, each with its deployments) and
# ``[router]`` are the router's (docs/router.md).
# A section the server learns goes in ``_SECTIONS``: ``ConfigFile.sections`` then holds
# it (``gprochat serve`` keeps the ConfigFile it read in its click context's ``meta``).

_SECTIONS: frozenset[str] = frozenset({"models", "router"})
_RESERVED_SECTIONS: dict[str, str] = {}


class ConfigFileError(ConfigurationError):
    """A configuration file that cannot be used: ``path``, and the ``key`` at fault if any."""

    def __init__(self, path: str, message: str, key: str | None = None) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.key = key


@dataclass(frozen=True)
class ConfigFile:
    """A configuration file as read: ``settings`` (top-level keys as written, values as
    TOML gives them) and ``sections`` (tables the server understands)."""

    path: str
    settings: dict[str, Any]
    sections: dict[str, Any] = field(default_factory=dict)


def read_config_file(path: str | os.PathLike[str]) -> ConfigFile:
    """Read a TOML configuration file; ``ConfigFileError`` says what is wrong and where.

    Only the file's shape is checked here (TOML, reserved sections); the keys and
    their types are the command's to check, since they are its options.
    """
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib

    name = os.fspath(path)
    try:
        with open(name, "rb") as file:
            data = tomllib.load(file)
    except OSError as exc:
        raise ConfigFileError(name, f"cannot read it: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError(name, f"not valid TOML: {exc}") from None
    sections = {}
    for key in list(data):
        if key in _RESERVED_SECTIONS:
            raise ConfigFileError(name, _RESERVED_SECTIONS[key], key)
        if key in _SECTIONS:
            sections[key] = data.pop(key)
    if "router" in sections and "models" not in sections:
        raise ConfigFileError(name, "[router] settings need [models] to route: declare "
                              '[models."NAME"] with its [[models."NAME".deployments]]', "router")
    return ConfigFile(name, data, sections)
