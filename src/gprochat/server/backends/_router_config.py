"""The router's settings, from the ``[models]`` and ``[router]`` tables of ``serve --config``.

``check_router_settings(data)`` checks them (no backend is built, no socket opened)
and raises ``RouterSettingError`` naming the path at fault
(``models."gemini-pro".deployments[2].rpm: ...``); ``build_router(data, ...)`` builds
the ``RouterBackend``. ``data`` is ``{"models": ..., "router": ...}`` as TOML gives it.

::

    [router]                        # optional
    default-model = "gemini-pro"    # default: the first model declared
    cooldown = 10                   # seconds after a first failure (doubling), default 10
    max-cooldown = 300              # the longest cool-down, default 300
    first-text-timeout = 30         # seconds a deployment has for its first text (default: none)

    [models."gemini-pro"]
    strategy = "failover"           # or "round-robin", "least-busy"
    [[models."gemini-pro".deployments]]
    backend = "gemini"              # local, gemini, openai, relay, echo
    api-keys = ["k1", "k2"]         # or api-key = "k1"; they rotate
    rpm = 60                        # requests per minute (default: no budget)
    max-concurrency = 8             # answers in flight (default: no bound)
    # name, first-text-timeout, and the backend's own options (model, base-url, ...)
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Optional, cast

from ...errors import ConfigurationError
from ._router_health import HealthStore, MemoryHealth, RedisHealth
from .base import Backend
from .relay import RelayBackend
from .router import STRATEGIES, Deployment, RoutedModel, RouterBackend, Strategy, fingerprint

__all__ = ["RouterSettingError", "RouterSpec", "build_router", "check_router_settings"]

_ROUTER_KEYS = ("default-model", "cooldown", "max-cooldown", "first-text-timeout")
_MODEL_KEYS = ("strategy", "deployments")
_ROUTING_KEYS = ("backend", "name", "api-key", "api-keys", "rpm", "max-concurrency",
                 "first-text-timeout")
# Options a deployment may not set: the router sets them, or they have no meaning here.
_RESERVED_OPTIONS = ("api_key",)


class RouterSettingError(ConfigurationError):
    """A router setting is wrong; ``path`` says where (``models.X.deployments[0].rpm``)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


def _factories() -> dict[str, Callable[..., Backend]]:
    from . import BACKENDS

    return {**BACKENDS, "relay": RelayBackend}


@dataclass(frozen=True)
class DeploymentSpec:
    name: str
    backend: str
    keys: tuple[Optional[str], ...]
    options: dict[str, Any]
    rpm: Optional[int] = None
    max_concurrency: Optional[int] = None
    first_text_timeout: Optional[float] = None


@dataclass(frozen=True)
class RouterSpec:
    models: dict[str, tuple[Strategy, list[DeploymentSpec]]]
    default_model: Optional[str] = None
    cooldown: float = 10.0
    max_cooldown: float = 300.0
    first_text_timeout: Optional[float] = None
    names: list[str] = field(default_factory=list)


def _quoted(name: str) -> str:
    return name if name.replace("-", "").replace("_", "").isalnum() else f'"{name}"'


def _table(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise RouterSettingError(path, f"must be a table, not {type(value).__name__} {value!r}")
    return value


def _unknown(table: dict[str, Any], known: tuple[str, ...], path: str) -> None:
    for key in table:
        if key not in known and key.replace("_", "-") not in known:
            raise RouterSettingError(f"{path}.{key}", f"unknown key; use one of: {', '.join(known)}")


def _seconds(value: Any, path: str, *, default: Optional[float]) -> Optional[float]:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value <= 0:
        raise RouterSettingError(path, f"must be a number of seconds greater than 0, not {value!r}")
    return float(value)


def _count(value: Any, path: str) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RouterSettingError(path, f"must be a whole number of at least 1, not {value!r}")
    return value


def _get(table: dict[str, Any], key: str) -> Any:
    return table.get(key, table.get(key.replace("-", "_")))


def check_router_settings(data: dict[str, Any]) -> RouterSpec:
    """The router's settings, checked; ``RouterSettingError`` names the first wrong one."""
    router = _table(data.get("router") or {}, "router")
    _unknown(router, _ROUTER_KEYS, "router")
    models = _table(data.get("models"), "models")
    if not models:
        raise RouterSettingError("models", "declare at least one model: [models.\"NAME\"] with "
                                 "its [[models.\"NAME\".deployments]]")
    specs: dict[str, tuple[Strategy, list[DeploymentSpec]]] = {}
    names: list[str] = []
    for model, table in models.items():
        where = f"models.{_quoted(model)}"
        table = _table(table, where)
        _unknown(table, _MODEL_KEYS, where)
        strategy = table.get("strategy", "failover")
        if strategy not in STRATEGIES:
            raise RouterSettingError(f"{where}.strategy", f"must be one of {', '.join(STRATEGIES)}, "
                                     f"not {strategy!r}")
        deployments = table.get("deployments")
        if not isinstance(deployments, list) or not deployments:
            raise RouterSettingError(f"{where}.deployments", "declare at least one deployment: "
                                     f'[[{where}.deployments]] with backend = "..."')
        specs[model] = (cast(Strategy, strategy), [])
        for index, deployment in enumerate(deployments):
            spec = _deployment(model, index, _table(deployment, f"{where}.deployments[{index}]"),
                               f"{where}.deployments[{index}]")
            if spec.name in names:
                raise RouterSettingError(f"{where}.deployments[{index}].name",
                                         f"{spec.name!r} names another deployment too")
            names.append(spec.name)
            specs[model][1].append(spec)
    default_model = _get(router, "default-model")
    if default_model is not None and default_model not in specs:
        raise RouterSettingError("router.default-model", f"{default_model!r} is not a declared "
                                 f"model; declare [models.{_quoted(str(default_model))}] or use one "
                                 f"of: {', '.join(specs)}")
    cooldown = _seconds(_get(router, "cooldown"), "router.cooldown", default=10.0)
    max_cooldown = _seconds(_get(router, "max-cooldown"), "router.max-cooldown", default=300.0)
    assert cooldown is not None and max_cooldown is not None
    if max_cooldown < cooldown:
        raise RouterSettingError("router.max-cooldown", f"must be at least cooldown ({cooldown:g}), "
                                 f"not {max_cooldown:g}")
    return RouterSpec(specs, default_model, cooldown, max_cooldown,
                      _seconds(_get(router, "first-text-timeout"), "router.first-text-timeout",
                               default=None), names)


def _deployment(model: str, index: int, table: dict[str, Any], where: str) -> DeploymentSpec:
    factories = _factories()
    backend = table.get("backend")
    if backend not in factories:
        raise RouterSettingError(f"{where}.backend", f"must be one of {', '.join(sorted(factories))}, "
                                 f"not {backend!r}")
    accepted = inspect.signature(factories[backend]).parameters
    options: dict[str, Any] = {}
    for key, value in table.items():
        if key.replace("_", "-") in _ROUTING_KEYS:
            continue
        option = key.replace("-", "_")
        if option not in accepted or option in _RESERVED_OPTIONS:
            settable = sorted(name.replace("_", "-") for name in accepted
                              if name not in _RESERVED_OPTIONS)
            raise RouterSettingError(f"{where}.{key}", f"the {backend} backend has no such option; "
                                     f"it takes: {', '.join([*_ROUTING_KEYS[1:4], *settable])}")
        options[option] = value
    if "model" in accepted and "model" not in options and backend != "relay":
        options["model"] = model  # the upstream's model is the name clients ask for
    keys = _keys(table, where)
    if keys != (None,) and "api_key" not in accepted:
        raise RouterSettingError(f"{where}.api-keys", f"the {backend} backend takes no API key")
    name = table.get("name", f"{model}[{index}]")
    if not isinstance(name, str) or not name:
        raise RouterSettingError(f"{where}.name", f"must be a non-empty string, not {name!r}")
    return DeploymentSpec(
        name, backend, keys, options, _count(table.get("rpm"), f"{where}.rpm"),
        _count(_get(table, "max-concurrency"), f"{where}.max-concurrency"),
        _seconds(_get(table, "first-text-timeout"), f"{where}.first-text-timeout", default=None),
    )


def _keys(table: dict[str, Any], where: str) -> tuple[Optional[str], ...]:
    one, many = _get(table, "api-key"), _get(table, "api-keys")
    if one is not None and many is not None:
        raise RouterSettingError(f"{where}.api-key", "give api-key or api-keys, not both")
    if one is not None:
        many = [one]
    if many is None:
        return (None,)
    if not isinstance(many, list) or not many or not all(isinstance(k, str) and k for k in many):
        raise RouterSettingError(f"{where}.api-keys", "must be a list of non-empty strings")
    if len(set(many)) != len(many):
        raise RouterSettingError(f"{where}.api-keys", "lists a key twice")
    return tuple(many)


def build_router(
    data: dict[str, Any],
    *,
    redis_url: Optional[str] = None,
    max_streams: int = 0,
    health: Optional[HealthStore] = None,
) -> RouterBackend:
    """The ``RouterBackend`` the settings describe; its health in Redis with ``redis_url``.

    A backend's own option errors raise ``RouterSettingError`` naming the deployment.
    """
    spec = check_router_settings(data)
    if health is None:
        if redis_url:
            health = RedisHealth(redis_url, cooldown=spec.cooldown, max_cooldown=spec.max_cooldown)
        else:
            health = MemoryHealth(cooldown=spec.cooldown, max_cooldown=spec.max_cooldown)
    factories = _factories()
    models = []
    for model, (strategy, deployments) in spec.models.items():
        built = []
        for index, deployment in enumerate(deployments):
            factory = factories[deployment.backend]
            options = dict(deployment.options)
            accepted = inspect.signature(factory).parameters
            if "max_connections" in accepted and "max_connections" not in options:
                options["max_connections"] = max_streams + 16 if max_streams else 0
            backends = []
            for number, key in enumerate(deployment.keys):
                keyed = options if key is None else {**options, "api_key": key}
                try:
                    backends.append((fingerprint(key, number), factory(**keyed)))
                except (TypeError, ValueError) as exc:
                    where = f"models.{_quoted(model)}.deployments[{index}]"
                    option = getattr(exc, "option", None)
                    raise RouterSettingError(f"{where}.{option.replace('_', '-')}" if option else where,
                                             f"{deployment.backend} backend: {exc}") from None
            built.append(Deployment(deployment.name, deployment.backend, backends,
                                    deployment.max_concurrency, deployment.rpm,
                                    deployment.first_text_timeout))
        models.append(RoutedModel(model, built, strategy))
    return RouterBackend(models, health=health, default_model=spec.default_model,
                         first_text_timeout=spec.first_text_timeout)
