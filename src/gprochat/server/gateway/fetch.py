"""Fetching a remote image URL for the gateway (``--fetch-image-urls``), without SSRF.

Off by default: a server that fetches the URLs its clients give it can be made to
reach what only it can reach (a cloud's metadata at 169.254.169.254, an admin page on
127.0.0.1, a database on 10.0.0.5). When the operator turns it on, each fetch follows
these rules:

=================================  ==========================================================
rule                               how
=================================  ==========================================================
only ``http`` and ``https``        any other scheme is refused before anything else
only public addresses              the host name is resolved here, once; every address it
                                   gives must be globally routable (no loopback, private,
                                   link-local, shared, multicast, reserved, unspecified,
                                   nor an IPv6 address embedding one: IPv4-mapped, NAT64,
                                   6to4, Teredo); one forbidden address refuses the URL
no second resolution               the connection goes to the addresses just checked (a
                                   resolver that only knows them), so a DNS answer that
                                   changes between check and connect (rebinding) is moot
no redirects                       a 3xx is refused, naming where it pointed (each hop
                                   would need the same checks: give the final URL)
at most ``max_bytes``              counted as the body arrives; ``Content-Length`` is only
                                   believed when it already says too much
at most ``timeout`` seconds        for everything: resolution, connection, headers, body
no proxy, no decompression         ``trust_env=False``; ``Accept-Encoding: identity``, and
                                   the bytes are taken as sent
=================================  ==========================================================

The fetched bytes are then checked as any image is (the guard's ``check_images``:
magic numbers decide the type). Every refusal is an ``ImageError`` whose ``status`` is
400, or 413 for the size limit; the gateway answers it as OpenAI's error.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable, Sequence
from typing import Any, Optional

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from ...errors import ImageError

__all__ = ["ImageFetcher", "forbidden_reason", "shown_url"]

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_CHUNK = 64 * 1024
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")


def _embedded(ip: Address) -> list[Address]:
    """The IPv4 addresses an IPv6 address stands for, when it embeds any."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return []
    found: list[Address] = []
    if ip.ipv4_mapped is not None:
        found.append(ip.ipv4_mapped)
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found.extend(ip.teredo)
    if ip in _NAT64:
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return found


def forbidden_reason(ip: Address) -> Optional[str]:
    """Why a server must not connect to ``ip`` on a client's behalf, or None when it may.

    >>> forbidden_reason(ipaddress.ip_address("169.254.169.254"))
    'link-local'
    >>> forbidden_reason(ipaddress.ip_address("::ffff:10.0.0.1"))
    'private (as ::ffff:10.0.0.1)'
    """
    for inner in _embedded(ip):
        reason = forbidden_reason(inner)
        if reason is not None:
            return f"{reason.partition(' (as ')[0]} (as {ip})"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return None  # an IPv4 address written as IPv6: the IPv4 address is what is reached
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_multicast:
        return "multicast"
    if ip.is_private:
        return "private"
    if isinstance(ip, ipaddress.IPv6Address) and ip in _NAT64_LOCAL:
        return "private"
    if ip.is_reserved:
        return "reserved"
    if not ip.is_global:
        return "not globally routable"
    return None


class _PinnedResolver(AbstractResolver):
    """A resolver that knows only the addresses already checked: aiohttp connects to them."""

    def __init__(self, addresses: Sequence[Address]) -> None:
        self._addresses = addresses

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(
                hostname=host,
                host=str(ip),
                port=port,
                family=socket.AF_INET6 if ip.version == 6 else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for ip in self._addresses
        ]

    async def close(self) -> None:
        pass


class ImageFetcher:
    """Fetches image URLs by the rules of this module; ``fetch`` returns the raw bytes.

    ``max_bytes`` (the server's ``--max-image-bytes``; 0: no limit) and ``timeout``
    (``--image-fetch-timeout``, seconds for the whole fetch) bound each fetch.

    ``allowed_networks`` is for tests only, never set from the command line or a
    configuration file: addresses in these networks are let through although they are
    forbidden (the suite's scripted servers listen on 127.0.0.1, which is how it tests
    slow and huge answers being cut). The server's own fetcher has none.
    """

    def __init__(
        self,
        *,
        max_bytes: int,
        timeout: float,
        allowed_networks: Iterable[Network] = (),
    ) -> None:
        self.max_bytes = max_bytes
        self.timeout = timeout
        self._allowed = tuple(allowed_networks)

    async def fetch(self, url: str, *, where: str) -> bytes:
        """The bytes at ``url`` (http or https); ``ImageError`` names ``where`` and the rule."""
        target = _parse(url, where)
        try:
            return await asyncio.wait_for(self._fetch(target, where), self.timeout)
        except asyncio.TimeoutError:
            raise ImageError(
                f"{where}: fetching {_shown(target)} took longer than {self.timeout:g} seconds "
                "(--image-fetch-timeout); send the image as a data URL instead",
                where=where,
            ) from None

    async def _fetch(self, target: URL, where: str) -> bytes:
        addresses = await self._checked_addresses(target, where)
        connector = aiohttp.TCPConnector(
            resolver=_PinnedResolver(addresses), use_dns_cache=False, limit=1,
            force_close=True,
        )
        async with aiohttp.ClientSession(
            connector=connector, trust_env=False, auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None),
        ) as session:
            try:
                async with session.get(
                    target, allow_redirects=False,
                    headers={"Accept": "image/*", "Accept-Encoding": "identity"},
                ) as response:
                    return await self._read(response, target, where)
            except aiohttp.ClientError as exc:
                raise ImageError(
                    f"{where}: could not fetch {_shown(target)} ({type(exc).__name__}: {exc})",
                    where=where,
                ) from None

    async def _checked_addresses(self, target: URL, where: str) -> list[Address]:
        host = target.raw_host or ""
        try:
            addresses: list[Address] = [ipaddress.ip_address(host.strip("[]"))]
        except ValueError:
            addresses = await _resolve(host, target.port or 80, where)
        for ip in addresses:
            reason = forbidden_reason(ip)
            if reason is not None and not any(ip in net for net in self._allowed):
                via = "" if str(ip) == host.strip("[]") else f" (it resolves to {ip})"
                raise ImageError(
                    f"{where}: the image URL's host {host}{via} is a {reason} address; "
                    "this server fetches images from public addresses only: send the image "
                    "as a data URL instead",
                    where=where,
                )
        return addresses

    async def _read(self, response: aiohttp.ClientResponse, target: URL, where: str) -> bytes:
        if 300 <= response.status < 400:
            location = response.headers.get("Location", "")
            raise ImageError(
                f"{where}: {_shown(target)} redirects ({response.status}) to {location[:200]!r}; "
                "redirects are not followed: give the image's final URL",
                where=where,
            )
        if response.status != 200:
            raise ImageError(
                f"{where}: {_shown(target)} answered HTTP {response.status}, not the image",
                where=where,
            )
        declared = response.content_length
        if self.max_bytes and declared is not None and declared > self.max_bytes:
            raise self._too_large(target, where, declared, at_least=False)
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.content.iter_chunked(_CHUNK):
            size += len(chunk)
            if self.max_bytes and size > self.max_bytes:
                raise self._too_large(target, where, size, at_least=True)
            chunks.append(chunk)
        return b"".join(chunks)

    def _too_large(self, target: URL, where: str, size: int, *, at_least: bool) -> ImageError:
        return ImageError(
            f"{where}: the image at {_shown(target)} is {'over ' if at_least else ''}{size} "
            f"bytes, over the limit of {self.max_bytes} bytes: send a smaller image "
            "(--max-image-bytes)",
            where=where,
            status=413,
        )


def _parse(url: str, where: str) -> URL:
    try:
        target = URL(url)
    except (ValueError, TypeError) as exc:
        raise ImageError(
            f"{where}: the image URL is not a valid URL ({type(exc).__name__})", where=where
        ) from None
    if target.scheme not in ("http", "https") or not target.raw_host:
        raise ImageError(
            f"{where}: only http and https image URLs with a host can be fetched, not "
            f"{shown_url(url)}",
            where=where,
        )
    return target


async def _resolve(host: str, port: int, where: str) -> list[Address]:
    loop = asyncio.get_running_loop()
    try:
        infos: list[Any] = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise ImageError(
            f"{where}: the image URL's host {host!r} cannot be resolved ({exc})", where=where
        ) from None
    addresses: list[Address] = []
    for info in infos:
        # The scope of a link-local IPv6 address ("fe80::1%eth0") is dropped: it is refused.
        ip = ipaddress.ip_address(str(info[4][0]).partition("%")[0])
        if ip not in addresses:
            addresses.append(ip)
    if not addresses:
        raise ImageError(f"{where}: the image URL's host {host!r} has no address", where=where)
    return addresses


def _shown(target: URL) -> str:
    """The URL for a message: no credentials, no query (either may be secret), short."""
    shown = str(target.with_user(None).with_query(None).with_fragment(None))
    return shown if len(shown) <= 120 else shown[:117] + "..."


def shown_url(url: str) -> str:
    """``url`` as a message may show it (see ``_shown``), or its scheme alone if unparsable."""
    try:
        return _shown(URL(url))
    except (ValueError, TypeError):
        return url.partition(":")[0][:16] + ": URL"
