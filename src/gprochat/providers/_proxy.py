"""Proxy URLs: which ones we take, and how each kind reaches aiohttp.

HTTP(S) proxies are aiohttp's own (a per-request ``proxy=`` plus ``BasicAuth``);
SOCKS proxies need a connector of their own, from aiohttp-socks.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from typing import Optional
from urllib.parse import unquote, urlsplit, urlunsplit

import aiohttp

from ..errors import ConfigurationError

__all__ = ["Proxy", "resolve_proxy"]

_HTTP_SCHEMES = {"http", "https"}
_SOCKS_SCHEMES = {"socks5", "socks5h", "socks4", "socks4a"}


@dataclass(frozen=True)
class Proxy:
    """A validated proxy URL; ``url`` keeps the credentials, ``display`` hides them."""

    url: str
    scheme: str
    display: str

    @property
    def is_socks(self) -> bool:
        return self.scheme in _SOCKS_SCHEMES

    def http_settings(self) -> tuple[Optional[str], Optional[dict[str, str]]]:
        """``(proxy, proxy_headers)`` for an aiohttp request (both None for SOCKS).

        Credentials go in a ``Proxy-Authorization`` header we write ourselves:
        aiohttp is deprecating ``BasicAuth``.
        """
        if self.is_socks:
            return None, None
        parts = urlsplit(self.url)
        if not parts.username:
            return self.url, None
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        header = "Basic " + base64.b64encode(pair).decode("ascii")
        return _without_credentials(self.url), {"Proxy-Authorization": header}

    def connector(self) -> aiohttp.BaseConnector:
        """The connector a session through this proxy uses."""
        if not self.is_socks:
            return aiohttp.TCPConnector()
        from aiohttp_socks import ProxyConnector

        # python-socks knows socks4/socks5; the "h"/"a" variants mean "let the proxy resolve".
        rdns = self.scheme in {"socks5h", "socks4a"}
        url = self.url.replace(self.scheme + "://", self.scheme[:6] + "://", 1)
        return ProxyConnector.from_url(url, rdns=rdns)


def resolve_proxy(value: Optional[str]) -> Optional[Proxy]:
    """The proxy a call uses: ``proxy=``, else ``GPROCHAT_PROXY``, else none."""
    source = "proxy"
    if not value:
        value = os.environ.get("GPROCHAT_PROXY") or None
        source = "GPROCHAT_PROXY"
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigurationError(f"{source}={value!r} is invalid: pass a URL string")
    parts = urlsplit(value.strip())
    scheme = parts.scheme.lower()
    if scheme not in _HTTP_SCHEMES | _SOCKS_SCHEMES or not parts.hostname:
        raise ConfigurationError(
            f"{source}={_without_credentials(value)!r} is not a proxy URL: use "
            "http://host:port, https://host:port or socks5://user:pass@host:port"
        )
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None and scheme in _SOCKS_SCHEMES:
        raise ConfigurationError(f"{source}={_without_credentials(value)!r} needs a port")
    return Proxy(url=value.strip(), scheme=scheme, display=_without_credentials(value))


def _without_credentials(url: str) -> str:
    parts = urlsplit(url.strip())
    if "@" not in parts.netloc:
        return url.strip()
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
