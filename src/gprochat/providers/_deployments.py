"""Deployments: what one is, and the three ways to name several (code, option, file).

A deployment is a GeminiProChat server the client may send a request to: its base
URL, its secret key, its site password and, optionally, the model it answers with
(the protocol has no model field, so this only names it). Several are given as

- a list in code: ``deployments=[Deployment(base_url=...), {"base_url": ...}, ...]``;
- repeated ``--deployment URL[,secret=KEY][,password=PW][,model=NAME]`` options;
- a TOML file (``--deployments FILE``, ``GPROCHAT_DEPLOYMENTS``, ``deployments="f.toml"``)::

      [[deployment]]
      base_url = "https://chat-a.example"
      secret_key = "..."
      password = "..."
      model = "gemini-1.5-pro"
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union
from urllib.parse import urlsplit, urlunsplit

from .. import protocol
from ..errors import ConfigurationError

if TYPE_CHECKING:
    from .base import ProviderModelMixin

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = [
    "DEPLOYMENTS_ENV_VAR",
    "Deployment",
    "DeploymentsSetting",
    "check_base_url",
    "load_deployments",
    "parse_deployment",
    "deployments_from_environment",
    "resolve_deployments",
    "select_deployments",
]

DEPLOYMENTS_ENV_VAR = "GPROCHAT_DEPLOYMENTS"
_FIELDS = ("base_url", "secret_key", "password", "model")
# The compact syntax's keys (``--deployment URL,secret=...``) and the field each sets.
_SPEC_KEYS = {"secret": "secret_key", "secret_key": "secret_key", "password": "password",
              "model": "model"}


def check_base_url(base_url: str, source: str = "base_url") -> str:
    """``base_url``'s generate endpoint; ``ConfigurationError`` naming ``source`` if malformed."""
    if base_url.startswith("-"):  # `--base-url -a photo.png`: the option took the next one
        raise ConfigurationError(
            f"{source}={base_url!r} is an option, not a URL: give the deployment's URL "
            "right after it, e.g. http://127.0.0.1:8000"
        )
    if not base_url.lower().startswith(("http://", "https://")):
        hint = base_url.split("://", 1)[-1].strip("/") or "host:port"
        raise ConfigurationError(
            f"{source}={base_url!r} is not an http:// or https:// URL: "
            f"write the scheme too, e.g. http://{hint}"
        )
    if not base_url.split("://", 1)[1].strip("/"):
        raise ConfigurationError(f"{source}={base_url!r} has no host: e.g. http://host:port")
    return base_url.rstrip("/") + protocol.GENERATE_PATH


@dataclass(frozen=True)
class Deployment:
    """One GeminiProChat deployment.

    ``secret_key`` and ``password`` left ``None`` take the call's (``secret_key=``,
    ``password=``), then ``GPROCHAT_SECRET_KEY`` / ``GPROCHAT_PASSWORD``, then the
    provider's defaults, as a single ``base_url`` does. ``model`` names the model it
    answers with: reported as the answer's model, and a request for that name goes
    only to the deployments that declare it.

    >>> Deployment("http://127.0.0.1:8000", secret_key="k", model="SmolLM2")
    Deployment(base_url='http://127.0.0.1:8000', model='SmolLM2')
    """

    base_url: str
    secret_key: Optional[str] = field(default=None, repr=False)
    password: Optional[str] = field(default=None, repr=False)
    model: Optional[str] = None

    def __post_init__(self) -> None:
        if not isinstance(self.base_url, str):
            raise ConfigurationError(f"base_url={self.base_url!r} is not a string")
        for name in ("secret_key", "password", "model"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise ConfigurationError(f"{name}={value!r} is not a string")
        check_base_url(self.base_url)

    @property
    def endpoint(self) -> str:
        return check_base_url(self.base_url)

    @property
    def display(self) -> str:
        """The base URL without any ``user:password@`` (for messages, logs and tables)."""
        parts = urlsplit(self.base_url.rstrip("/"))
        host = parts.netloc.rsplit("@", 1)[-1]
        return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))

    def key(self, secret_key: str, password: Optional[str]) -> tuple[str, str]:
        """What the cool-down registry knows this deployment by: its endpoint and a digest of
        its credentials (a wrong key retires that key's entry, not the URL's other keys)."""
        digest = hashlib.sha256(f"{secret_key}\0{password or ''}".encode()).hexdigest()[:16]
        return self.endpoint, digest


DeploymentsSetting = Union[
    Iterable[Union[Deployment, Mapping[str, Any], str]], str, os.PathLike[str], None
]


def parse_deployment(spec: str, source: str = "--deployment") -> Deployment:
    """``URL[,secret=KEY][,password=PW][,model=NAME]`` as a ``Deployment``.

    >>> parse_deployment("http://127.0.0.1:8000,secret=k,model=SmolLM2").secret_key
    'k'
    """
    url, *pairs = spec.strip().split(",")
    values: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        key = _SPEC_KEYS.get(name.strip().lower())
        if not sep or key is None:
            raise ConfigurationError(
                f"{source} {spec!r}: {pair!r} is not one of secret=, password=, model= "
                "(write URL[,secret=KEY][,password=PW][,model=NAME]; a value holding a comma "
                "goes in a deployments file)"
            )
        values[key] = value.strip()
    return _made(source, base_url=url.strip(), **values)


def _made(source: str, **fields: Any) -> Deployment:
    """A ``Deployment``, its errors prefixed with where it was written."""
    try:
        return Deployment(**fields)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{source}: {exc}") from None


def _from_mapping(item: Mapping[str, Any], source: str) -> Deployment:
    unknown = sorted(set(item) - set(_FIELDS))
    if unknown:
        raise ConfigurationError(
            f"{source}: unknown key(s) {', '.join(unknown)}; a deployment has "
            f"{', '.join(_FIELDS)}"
        )
    if "base_url" not in item:
        raise ConfigurationError(f"{source}: base_url is missing")
    return _made(source, **{name: item[name] for name in _FIELDS if name in item})


# Parsed files by (path, mtime, size): the environment variable is read on every call.
_loaded: dict[tuple[str, int, int], tuple[Deployment, ...]] = {}


def load_deployments(path: Union[str, os.PathLike[str]], source: Optional[str] = None) -> list[Deployment]:
    """The deployments a TOML file lists as ``[[deployment]]`` tables, in order."""
    where = source or str(path)
    try:
        stat = os.stat(path)
    except OSError as exc:
        raise ConfigurationError(f"{where}: cannot read the deployments file ({exc.strerror})") from exc
    cache_key = (os.fspath(path), stat.st_mtime_ns, stat.st_size)
    cached = _loaded.get(cache_key)
    if cached is not None:
        return list(cached)
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"{where}: cannot read the deployments file ({exc})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{where} is not valid TOML: {exc}") from exc
    unknown = sorted(set(data) - {"deployment"})
    tables = data.get("deployment")
    if unknown or not isinstance(tables, list) or not tables:
        raise ConfigurationError(
            f"{where}: list the deployments as [[deployment]] tables (base_url, secret_key, "
            "password, model)" + (f"; unknown key(s): {', '.join(unknown)}" if unknown else "")
        )
    deployments = tuple(
        _from_mapping(table, f"{where}, deployment {number}") if isinstance(table, dict)
        else _from_mapping({}, f"{where}, deployment {number}")
        for number, table in enumerate(tables, 1)
    )
    if len(_loaded) < 32:
        _loaded[cache_key] = deployments
    return list(deployments)


def resolve_deployments(value: DeploymentsSetting, source: str = "deployments") -> Optional[list[Deployment]]:
    """The deployments ``value`` names: a list (of ``Deployment``, dicts or compact
    strings) or a TOML file's path; ``None`` for none."""
    if value is None:
        return None
    if isinstance(value, (str, os.PathLike)):
        if isinstance(value, str) and not value.strip():
            return None
        return load_deployments(value, f"{source}={os.fspath(value)!r}")
    if isinstance(value, Mapping):
        raise ConfigurationError(f"{source}= takes a list of deployments, not one: wrap it in [...]")
    deployments: list[Deployment] = []
    try:
        items = list(value)
    except TypeError:
        raise ConfigurationError(
            f"{source}={value!r} is invalid: pass a list of Deployment objects, dicts or "
            "'URL,secret=...' strings, or a TOML file's path"
        ) from None
    for number, item in enumerate(items, 1):
        if isinstance(item, Deployment):
            deployments.append(item)
        elif isinstance(item, Mapping):
            deployments.append(_from_mapping(item, f"{source}[{number - 1}]"))
        elif isinstance(item, str):
            deployments.append(parse_deployment(item, f"{source}[{number - 1}]"))
        else:
            raise ConfigurationError(
                f"{source}[{number - 1}]={item!r} is not a deployment: use Deployment(...), a dict "
                "or 'URL,secret=...,password=...'"
            )
    if not deployments:
        raise ConfigurationError(f"{source}= is empty: give at least one deployment")
    return deployments


def deployments_from_environment() -> Optional[list[Deployment]]:
    """``GPROCHAT_DEPLOYMENTS``'s file, when set."""
    path = os.environ.get(DEPLOYMENTS_ENV_VAR, "").strip()
    return load_deployments(path, f"{DEPLOYMENTS_ENV_VAR}={path!r}") if path else None


def select_deployments(
    provider: type[ProviderModelMixin], model: str, deployments: list[Deployment]
) -> tuple[str, list[Deployment]]:
    """The model name a request reports and the deployments that may answer it.

    ``""`` and the provider's own names (``gemini-1.5-pro``, its aliases) go to every
    deployment: the protocol has no model field, so these are only labels. Any other
    name goes to the deployments that declare it as their ``model`` when some do (a
    label, as above); else to every deployment, each asked whether it offers that
    model (``GET /api/models``, see ``_models.py``) when the request is sent.
    """
    if not model or model in provider.get_models() or model in provider.model_aliases:
        return provider.get_model(model), deployments
    declared = [deployment for deployment in deployments if deployment.model == model]
    return model, declared or deployments
