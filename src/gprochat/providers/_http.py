"""The client's one HTTP boundary: post a signed body, stream decoded text back.

aiohttp's (and aiohttp-socks') exceptions are translated into gprochat's here and
nowhere else: one table, ``_TRANSLATIONS`` (exception types, a condition, the
exception to raise), applied by one context manager, ``_Translating``.
"""

from __future__ import annotations

import asyncio
import codecs
import json
import re
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Optional

import aiohttp
import aiohttp_socks
import python_socks

from ..errors import (
    ConfigurationError,
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

__all__ = ["TextStream", "get_json", "open_text_stream", "one_line", "translate_error", "translating"]

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


@dataclass
class _Call:
    """What a translated message needs to know about the request that failed."""

    url: str
    timeout: Timeout
    proxy: Optional[Proxy]
    received: Optional[_TextTail] = None

    @property
    def via(self) -> str:
        return f" through the proxy {self.proxy.display}" if self.proxy else ""

    @property
    def partial_text(self) -> str:
        return self.received.text if self.received else ""

    @property
    def received_chars(self) -> int:
        return self.received.total if self.received else 0

    @property
    def socks(self) -> bool:
        return self.proxy is not None and self.proxy.is_socks


def _bad_utf8(exc: BaseException, call: _Call) -> GPROChatError:
    assert isinstance(exc, UnicodeDecodeError)
    return ProtocolError(
        f"{call.url} sent an answer that is not valid UTF-8 ({exc.reason} at byte {exc.start})"
    )


def _unencodable(exc: BaseException, call: _Call) -> GPROChatError:
    assert isinstance(exc, UnicodeEncodeError)
    bad = exc.object[exc.start : exc.end] if isinstance(exc.object, str) else ""
    return ProtocolError(
        f"The conversation holds text that cannot be sent as UTF-8 ({bad!r} at character "
        f"{exc.start}: {exc.reason}); a lone surrogate usually comes from input decoded "
        "with errors='surrogateescape': decode it with errors='replace'"
    )


def _proxy_failed(exc: BaseException, call: _Call) -> GPROChatError:
    return ProxyError(f"Proxy failed for {call.url}{call.via}: {exc}", url=call.url)


def _socks_hung_up(exc: BaseException, call: _Call) -> GPROChatError:
    assert call.proxy is not None
    return ProxyError(
        f"The proxy {call.proxy.display} hung up during the SOCKS handshake for {call.url} "
        "(wrong user or password in the proxy URL?)",
        url=call.url,
    )


def _proxy_unreachable(exc: BaseException, call: _Call) -> GPROChatError:
    assert call.proxy is not None
    return ProxyError(f"Cannot reach the proxy {call.proxy.display} for {call.url}: {exc}", url=call.url)


def _cut_off(exc: BaseException, call: _Call) -> GPROChatError:
    return IncompleteResponseError(
        f"The answer from {call.url} was cut off after {call.received_chars} characters "
        f"(the connection ended before the body's proper end); the text is incomplete",
        url=call.url,
        partial_text=call.partial_text,
    )


def _timed_out(exc: BaseException, call: _Call) -> GPROChatError:
    timeout, url, via = call.timeout, call.url, call.via
    if isinstance(exc, (aiohttp.ConnectionTimeoutError, *_SocksTimeout)):
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
        after = f" after {call.received_chars} characters" if call.received_chars else ""
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


def _cannot_connect(exc: BaseException, call: _Call) -> GPROChatError:
    assert isinstance(exc, aiohttp.ClientConnectorError)
    return ConnectError(
        f"Cannot connect to {call.url}{call.via}: {exc.os_error.strerror or exc} "
        "(is the server running and the base URL right?)",
        url=call.url,
    )


def _disconnected(exc: BaseException, call: _Call) -> GPROChatError:
    return ConnectError(f"{call.url} closed the connection without answering", url=call.url)


def _invalid_url(exc: BaseException, call: _Call) -> GPROChatError:
    # A wrong URL stays wrong: a configuration error, never retried.
    return ConfigurationError(
        f"Invalid URL {call.url!r} ({exc}): pass a base URL like http://host:port"
    )


def _other(exc: BaseException, call: _Call) -> GPROChatError:
    return TransportError(f"Request to {call.url} failed: {exc!r}", url=call.url)


def _always(exc: BaseException, call: _Call) -> bool:
    return True


_Builder = Callable[[BaseException, _Call], GPROChatError]
_Condition = Callable[[BaseException, _Call], bool]

# THE table: the first row whose types match (and whose condition holds) builds our
# exception. Rows are in priority order; the last one catches every transport failure.
_TRANSLATIONS: tuple[tuple[tuple[type[BaseException], ...], _Condition, _Builder], ...] = (
    ((UnicodeDecodeError,), _always, _bad_utf8),
    ((UnicodeEncodeError,), _always, _unencodable),
    ((UnicodeError,), _always, _invalid_url),  # a host name IDNA cannot encode ("a..b")
    ((aiohttp.ClientProxyConnectionError, aiohttp.ClientHttpProxyError), _always, _proxy_failed),
    (_SocksError, lambda exc, call: not isinstance(exc, _SocksTimeout), _proxy_failed),
    # asyncio.IncompleteReadError: a SOCKS proxy hanging up mid-handshake
    ((EOFError,), lambda exc, call: call.socks, _socks_hung_up),
    (
        (OSError,),
        lambda exc, call: call.socks and not isinstance(exc, (asyncio.TimeoutError, aiohttp.ClientError)),
        _proxy_unreachable,
    ),
    ((aiohttp.ClientPayloadError,), _always, _cut_off),
    ((aiohttp.ServerDisconnectedError,), lambda exc, call: bool(call.partial_text), _cut_off),
    ((asyncio.TimeoutError, *_SocksTimeout), _always, _timed_out),
    ((aiohttp.ClientConnectorError,), _always, _cannot_connect),
    ((aiohttp.ServerDisconnectedError,), _always, _disconnected),
    ((aiohttp.InvalidURL,), _always, _invalid_url),
    ((aiohttp.ClientError, OSError, EOFError, *_SocksError), _always, _other),
)
# Everything the table translates; anything else (cancellation, our own errors) passes.
_TRANSLATED: tuple[type[BaseException], ...] = tuple(
    {kind: None for kinds, _, _ in _TRANSLATIONS for kind in kinds}
)


def _translation(exc: BaseException, call: _Call) -> GPROChatError:
    for kinds, condition, build in _TRANSLATIONS:
        if isinstance(exc, kinds) and condition(exc, call):
            return build(exc, call)
    raise AssertionError(f"untranslated {exc!r}")  # pragma: no cover: the last row takes all


class _Translating:
    """``with _Translating(call):`` the one place our exceptions replace the transport's.

    A class rather than ``@contextmanager``: entering it costs two method calls, so
    the per-chunk read can use it too.
    """

    __slots__ = ("call",)

    def __init__(self, call: _Call) -> None:
        self.call = call

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: Optional[type[BaseException]], exc: Optional[BaseException], tb: object
    ) -> None:
        if exc is None or isinstance(exc, GPROChatError) or not isinstance(exc, _TRANSLATED):
            return
        raise _translation(exc, self.call) from exc


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
        self._translating = _Translating(_Call(url, timeout, proxy, self._received))
        self.finished = False

    async def next_text(self) -> Optional[str]:
        """The next piece of text, or ``None`` once the body has ended properly."""
        if self.finished:
            return None
        with self._translating:
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
    with _Translating(_Call(url, timeout, proxy)):
        response = await session.post(
            url,
            data=body,
            headers=headers,
            proxy=proxy_url,
            proxy_headers=proxy_headers,
            timeout=timeout.for_attempt(remaining),
        )
        if response.status < 400:
            return TextStream(response, url, timeout, proxy)
        try:
            if response.status == 407 and proxy is not None:
                raise ProxyError(
                    f"The proxy {proxy.display} refused to forward the request to {url} "
                    "(407 Proxy Authentication Required): check the user and password in the proxy URL",
                    url=url,
                )
            raise await _error_from(response, url)
        finally:
            response.close()

async def get_json(
    session: aiohttp.ClientSession,
    url: str,
    *,
    headers: Mapping[str, str],
    proxy: Optional[Proxy],
    timeout: Timeout,
) -> object:
    """GET ``url``: its JSON body, or the error its status means (``ProtocolError`` if not JSON)."""
    proxy_url, proxy_auth = proxy.http_settings() if proxy else (None, None)
    if proxy_auth:
        headers = {**headers, **proxy_auth}
    with _Translating(_Call(url, timeout, proxy)):
        response = await session.get(
            url, headers=headers, proxy=proxy_url, timeout=timeout.for_attempt(timeout.total)
        )
        try:
            if response.status >= 400:
                raise await _error_from(response, url)
            raw = await response.content.read(_MAX_ERROR_BODY)
        finally:
            response.close()
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise ProtocolError(f"{url} did not answer JSON") from exc


async def _error_from(response: aiohttp.ClientResponse, url: str) -> GPROChatError:
    raw = await response.content.read(_MAX_ERROR_BODY)
    text = raw.decode("utf-8", "replace")
    message, code = parse_error_body(text)
    if message is not None and code is None and message == text.strip():
        # Not our JSON error shape (an HTML page from a proxy, a stack trace...):
        # one readable line; the whole body stays in ``body``.
        message = one_line(message, html="html" in response.headers.get("Content-Type", ""))
    return status_error(
        response.status,
        server_message=message,
        code=code,
        body=text,
        url=url,
        retry_after=parse_retry_after(response.headers.get("Retry-After")),
    )


class _PageText(HTMLParser):
    """An HTML page's title and visible text (scripts and styles left out)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.title: list[str] = []
        self.text: list[str] = []
        self._inside: list[str] = []

    def handle_starttag(self, tag: str, attrs: object) -> None:
        if tag in ("title", "script", "style"):
            self._inside.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if self._inside and self._inside[-1] == tag:
            self._inside.pop()

    def handle_data(self, data: str) -> None:
        where = self._inside[-1] if self._inside else None
        if where == "title":
            self.title.append(data)
        elif where is None:
            self.text.append(data)


_SPACE = re.compile(r"\s+")
_LOOKS_HTML = re.compile(r"^\s*<(!doctype|html|head|body|title|h1|p)\b", re.IGNORECASE)


def one_line(text: str, *, html: bool = False, limit: int = 200) -> str:
    """A server's raw error text as one readable line of at most ``limit`` characters.

    An HTML page gives its title (or its visible text when it has none).

    >>> one_line("<html><title>502 Bad Gateway</title><body><h1>502</h1></body></html>")
    '502 Bad Gateway'
    """
    if html or _LOOKS_HTML.match(text):
        page = _PageText()
        page.feed(text)
        page.close()
        title = _SPACE.sub(" ", "".join(page.title)).strip()
        text = title or " ".join(page.text)
    line = _SPACE.sub(" ", text).strip()
    if len(line) > limit:
        line = line[: limit - 1].rstrip() + "…"
    return line


def translating(url: str, timeout: Timeout, proxy: Optional[Proxy] = None) -> _Translating:
    """``with translating(url, timeout, proxy):`` raises gprochat's exceptions only."""
    return _Translating(_Call(url, timeout, proxy))


def translate_error(
    exc: BaseException,
    url: str,
    *,
    timeout: Optional[Timeout] = None,
    proxy: Optional[Proxy] = None,
) -> GPROChatError:
    """The gprochat exception for an aiohttp / socket / proxy failure (or bad UTF-8)."""
    return _translation(exc, _Call(url, timeout or Timeout(), proxy))
