"""The client's one HTTP boundary: post a signed body, stream decoded text back.

aiohttp's exceptions are translated into gprochat's here and nowhere else.
"""

from __future__ import annotations

import codecs
from collections import deque
from collections.abc import AsyncIterator, Mapping
from typing import Optional

import aiohttp

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
from ..protocol import parse_error_body

__all__ = ["stream_text"]

_MAX_ERROR_BODY = 64 * 1024
# How much of a streamed answer is kept for IncompleteResponseError.partial_text.
# Keeping all of it made memory grow with the answer (B2: +72 MiB for a 50 MB
# answer); a streaming caller already holds every chunk, and create_async puts
# the whole text back (see base.py).
_PARTIAL_TAIL_CHARS = 64 * 1024


class _TextTail:
    """The last ``limit`` characters (at least the last chunk) and a count of all of them."""

    def __init__(self, limit: int) -> None:
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


async def stream_text(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    *,
    headers: Mapping[str, str],
    proxy: Optional[str] = None,
) -> AsyncIterator[str]:
    """POST ``body`` to ``url`` and yield the answer's text as it arrives.

    The bytes are decoded incrementally, so a character split across two network
    chunks comes out whole. A body that ends before its proper end (chunked
    terminator or Content-Length) raises ``IncompleteResponseError``, whose
    ``partial_text`` is the last 64 Ki characters (the caller has the rest).
    """
    received = _TextTail(_PARTIAL_TAIL_CHARS)
    try:
        async with session.post(url, data=body, headers=headers, proxy=proxy) as response:
            if response.status >= 400:
                raise await _error_from(response, url)
            decoder = codecs.getincrementaldecoder("utf-8")()
            async for chunk in response.content.iter_any():
                text = decoder.decode(chunk)
                if text:
                    received.add(text)
                    yield text
            tail = decoder.decode(b"", final=True)
            if tail:
                yield tail
    except GPROChatError:
        raise
    except UnicodeDecodeError as exc:
        raise ProtocolError(
            f"{url} sent an answer that is not valid UTF-8 ({exc.reason} at byte {exc.start})"
        ) from exc
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise translate_error(exc, url, received.text, received_chars=received.total) from exc


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


def parse_retry_after(value: Optional[str]) -> Optional[float]:
    """Seconds from a ``Retry-After`` header given as seconds (HTTP dates: see issue 3)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def translate_error(
    exc: BaseException, url: str, partial_text: str = "", *, received_chars: Optional[int] = None
) -> TransportError:
    """The gprochat exception for an aiohttp / socket failure.

    ``received_chars`` counts the whole partial answer when ``partial_text`` is its tail.
    """
    if isinstance(exc, (aiohttp.ClientProxyConnectionError, aiohttp.ClientHttpProxyError)):
        return ProxyError(f"Proxy failed for {url}: {exc}", url=url)
    if isinstance(exc, aiohttp.ClientPayloadError) or (
        partial_text and isinstance(exc, aiohttp.ServerDisconnectedError)
    ):
        return IncompleteResponseError(
            f"The answer from {url} was cut off after "
            f"{len(partial_text) if received_chars is None else received_chars} characters "
            f"(the connection ended before the body's proper end); the text is incomplete",
            url=url,
            partial_text=partial_text,
        )
    if isinstance(exc, aiohttp.ServerTimeoutError) or isinstance(exc, TimeoutError):
        return TimeoutError(f"Timed out talking to {url}", url=url)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return ConnectError(
            f"Cannot connect to {url}: {exc.os_error.strerror or exc} "
            "(is the server running and the base URL right?)",
            url=url,
        )
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return ConnectError(f"{url} closed the connection without answering", url=url)
    if isinstance(exc, aiohttp.InvalidURL):
        return ConnectError(f"Invalid URL {url!r}: pass a base URL like http://host:port", url=url)
    return TransportError(f"Request to {url} failed: {exc!r}", url=url)
