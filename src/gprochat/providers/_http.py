"""The client's one HTTP boundary: post a signed body, stream decoded text back.

aiohttp's (and aiohttp-socks') exceptions are translated into gprochat's here and
nowhere else, in ``_translated``.
"""

from __future__ import annotations

import asyncio
import codecs
from collections import deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Optional

import aiohttp
import aiohttp_socks
import python_socks

from ..errors import (
    ConnectError,
    GPROChatError,
    IncompleteResponseError,
    ProtocolError,
    ProxyError,
    TimeoutError,
    TransportError,
    status_error,
)
from ..protocol import parse_error_body, parse_retry_after
from ._proxy import Proxy
from ._timeouts import Timeout

__all__ = ["TextStream", "open_text_stream", "translate_error"]

_MAX_ERROR_BODY = 64 * 1024
# How much of a streamed answer is kept for IncompleteResponseError.partial_text.
# Keeping all of it made memory grow with the answer (benchmark B2: +72 MiB for a
# 50 MB answer); a streaming caller already holds every chunk, and create_async
# puts the whole text back (see base.py).
_PARTIAL_TAIL_CHARS = 64 * 1024
_Utf8Decoder = codecs.getincrementaldecoder("utf-8")  # looked up once, not per answer


class _TextTail:
    """The last ``limit`` characters received (at least the last chunk), and a count of all."""

    def __init__(self, limit: int = _PARTIAL_TAIL_CHARS) -> None:
        self.limit = limit
        self.total = 0
        self._chunks: deque[str] = deque()
        self._kept = 0

    def add(self, text: str) -> None:
        self.total += len(text)
        self._chunks.append(text)
        self._kept += len(text)
        while self._kept - len(self._chunks[0]) >= self.limit:
            self._kept -= len(self._chunks.popleft())

    @property
    def text(self) -> str:
        return "".join(self._chunks)[-self.limit :]

# SOCKS failures come as aiohttp-socks' exceptions (older versions: python-socks').
_SocksTimeout: tuple[type[BaseException], ...] = (
    aiohttp_socks.ProxyTimeoutError,
    python_socks.ProxyTimeoutError,
)
_SocksError: tuple[type[BaseException], ...] = (
    aiohttp_socks.ProxyError,
    aiohttp_socks.ProxyConnectionError,
    python_socks.ProxyError,
    python_socks.ProxyConnectionError,
    *_SocksTimeout,
)
_TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    aiohttp.ClientError,
    OSError,
    EOFError,  # asyncio.IncompleteReadError: a SOCKS proxy hanging up mid-handshake
    asyncio.TimeoutError,
    *_SocksError,
)
# What ``_translation`` turns into gprochat's exceptions.
_TRANSLATED: tuple[type[BaseException], ...] = (UnicodeDecodeError, *_TRANSPORT_ERRORS)


class TextStream:
    """An open answer: ``next_text()`` gives decoded text until ``None`` (the end).

    A character split across two network chunks comes out whole. A body that ends
    before its proper end (chunked terminator or Content-Length) raises
    ``IncompleteResponseError``. ``close()`` before the end aborts the connection, so
    the server sees the disconnect at once and the socket is never reused half-read.
    """

    def __init__(
        self, response: aiohttp.ClientResponse, url: str, timeout: Timeout, proxy: Optional[Proxy]
    ) -> None:
        self._response = response
        self._url = url
        self._timeout = timeout
        self._proxy = proxy
        self._decoder = _Utf8Decoder()
        self._received = _TextTail()
        self.finished = False

    async def next_text(self) -> Optional[str]:
        """The next piece of text, or ``None`` once the body has ended properly."""
        if self.finished:
            return None
        # A plain try/except (free in CPython 3.11+ when nothing is raised) instead
        # of the ``_translated`` context manager: this runs once per chunk.
        try:
            while True:
                chunk = await self._response.content.readany()
                if not chunk:
                    self.finished = True
                    text = self._decoder.decode(b"", final=True)
                    if not text:
                        return None
                else:
                    text = self._decoder.decode(chunk)
                    if not text:
                        continue
                self._received.add(text)
                return text
        except GPROChatError:
            raise
        except _TRANSLATED as exc:
            raise _translation(exc, self._url, self._timeout, self._proxy, self._received) from exc

    def close(self) -> None:
        """Release the connection: back to the pool when complete, else cut it."""
        if self.finished:
            self._response.release()
        else:
            self._response.close()


async def open_text_stream(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    *,
    headers: Mapping[str, str],
    proxy: Optional[Proxy],
    timeout: Timeout,
    remaining: Optional[float],
) -> TextStream:
    """POST ``body`` to ``url``; the answer's stream, or the error its status means.

    ``remaining`` is what is left of the call's total time limit.
    """
    proxy_url, proxy_auth = proxy.http_settings() if proxy else (None, None)
    proxy_headers = None
    if proxy_auth and url.startswith("https:"):
        proxy_headers = proxy_auth  # sent on the CONNECT, never inside the tunnel
    elif proxy_auth:
        headers = {**headers, **proxy_auth}  # a plain-HTTP proxy reads the request itself
    try:  # not ``with _translated(...)``: a plain try costs nothing on every request
        response = await session.post(
            url,
            data=body,
            headers=headers,
            proxy=proxy_url,
            proxy_headers=proxy_headers,
            timeout=timeout.for_attempt(remaining),
        )
    except GPROChatError:
        raise
    except _TRANSLATED as exc:
        raise _translation(exc, url, timeout, proxy, None) from exc
    if response.status < 400:
        return TextStream(response, url, timeout, proxy)
    try:
        if response.status == 407 and proxy is not None:
            raise ProxyError(
                f"The proxy {proxy.display} refused to forward the request to {url} "
                "(407 Proxy Authentication Required): check the user and password in the proxy URL",
                url=url,
            )
        with _translated(url, timeout, proxy, None):
            raise await _error_from(response, url)
    finally:
        response.close()


@contextmanager
def _translated(
    url: str, timeout: Timeout, proxy: Optional[Proxy], received: Optional[_TextTail]
) -> Iterator[None]:
    try:
        yield
    except GPROChatError:
        raise
    except _TRANSLATED as exc:
        raise _translation(exc, url, timeout, proxy, received) from exc


def _translation(
    exc: BaseException,
    url: str,
    timeout: Timeout,
    proxy: Optional[Proxy],
    received: Optional[_TextTail],
) -> GPROChatError:
    """The gprochat exception for ``exc`` (a transport error or bad UTF-8)."""
    if isinstance(exc, UnicodeDecodeError):
        return ProtocolError(
            f"{url} sent an answer that is not valid UTF-8 ({exc.reason} at byte {exc.start})"
        )
    return translate_error(
        exc,
        url,
        received.text if received else "",
        received_chars=received.total if received else None,
        timeout=timeout,
        proxy=proxy,
    )


async def _error_from(response: aiohttp.ClientResponse, url: str) -> GPROChatError:
    raw = await response.content.read(_MAX_ERROR_BODY)
    text = raw.decode("utf-8", "replace")
    message, code = parse_error_body(text)
    return status_error(
        response.status,
        server_message=message,
        code=code,
        body=text,
        url=url,
        retry_after=parse_retry_after(response.headers.get("Retry-After")),
    )


def translate_error(
    exc: BaseException,
    url: str,
    partial_text: str = "",
    *,
    received_chars: Optional[int] = None,
    timeout: Optional[Timeout] = None,
    proxy: Optional[Proxy] = None,
) -> TransportError:
    """The gprochat exception for an aiohttp / socket / proxy failure.

    ``partial_text`` is (the tail of) the text received; ``received_chars`` counts all of it.
    """
    received = len(partial_text) if received_chars is None else received_chars
    via = f" through the proxy {proxy.display}" if proxy else ""
    if isinstance(exc, (aiohttp.ClientProxyConnectionError, aiohttp.ClientHttpProxyError)) or (
        isinstance(exc, _SocksError) and not isinstance(exc, _SocksTimeout)
    ):
        return ProxyError(f"Proxy failed for {url}{via}: {exc}", url=url)
    if proxy and proxy.is_socks and isinstance(exc, EOFError):
        return ProxyError(
            f"The proxy {proxy.display} hung up during the SOCKS handshake for {url} "
            "(wrong user or password in the proxy URL?)",
            url=url,
        )
    if proxy and proxy.is_socks and isinstance(exc, OSError) and not isinstance(
        exc, (asyncio.TimeoutError, aiohttp.ClientError)
    ):
        return ProxyError(f"Cannot reach the proxy {proxy.display} for {url}: {exc}", url=url)
    if isinstance(exc, aiohttp.ClientPayloadError) or (
        partial_text and isinstance(exc, aiohttp.ServerDisconnectedError)
    ):
        return IncompleteResponseError(
            f"The answer from {url} was cut off after {received} characters "
            f"(the connection ended before the body's proper end); the text is incomplete",
            url=url,
            partial_text=partial_text,
        )
    if isinstance(exc, (asyncio.TimeoutError, _SocksTimeout)):
        return _timeout_error(exc, url, received, timeout or Timeout(), via)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return ConnectError(
            f"Cannot connect to {url}{via}: {exc.os_error.strerror or exc} "
            "(is the server running and the base URL right?)",
            url=url,
        )
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return ConnectError(f"{url} closed the connection without answering", url=url)
    if isinstance(exc, aiohttp.InvalidURL):
        return ConnectError(f"Invalid URL {url!r}: pass a base URL like http://host:port", url=url)
    return TransportError(f"Request to {url} failed: {exc!r}", url=url)


def _timeout_error(
    exc: BaseException, url: str, received: int, timeout: Timeout, via: str
) -> TimeoutError:
    if isinstance(exc, (aiohttp.ConnectionTimeoutError, _SocksTimeout)):
        seconds = timeout.connect or 0.0
        return TimeoutError(
            f"connect timeout: could not connect to {url}{via} within {seconds:g}s "
            "(raise timeout= or GPROCHAT_CONNECT_TIMEOUT if the network is slow)",
            url=url,
            limit="connect",
            seconds=seconds,
        )
    if isinstance(exc, aiohttp.ServerTimeoutError):
        seconds = timeout.read or 0.0
        after = f" after {received} characters" if received else ""
        return TimeoutError(
            f"read timeout: no data for {seconds:g}s from {url}{after} "
            "(raise timeout= or GPROCHAT_READ_TIMEOUT if the model is slow)",
            url=url,
            limit="read",
            seconds=seconds,
        )
    seconds = timeout.total or 0.0
    return TimeoutError(
        f"total timeout: the call to {url} took longer than {seconds:g}s "
        "(raise timeout=Timeout(total=...) or GPROCHAT_TOTAL_TIMEOUT)",
        url=url,
        limit="total",
        seconds=seconds,
    )
