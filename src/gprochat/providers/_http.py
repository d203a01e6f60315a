"""The client's one HTTP boundary: post a signed body, stream decoded text back.

aiohttp's exceptions are translated into gprochat's here and nowhere else.
"""

from __future__ import annotations

import codecs
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
    terminator or Content-Length) raises ``IncompleteResponseError``.
    """
    received: list[str] = []
    try:
        async with session.post(url, data=body, headers=headers, proxy=proxy) as response:
            if response.status >= 400:
                raise await _error_from(response, url)
            decoder = codecs.getincrementaldecoder("utf-8")()
            async for chunk in response.content.iter_any():
                text = decoder.decode(chunk)
                if text:
                    received.append(text)
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
        raise translate_error(exc, url, "".join(received)) from exc


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


def translate_error(exc: BaseException, url: str, partial_text: str = "") -> TransportError:
    """The gprochat exception for an aiohttp / socket failure."""
    if isinstance(exc, (aiohttp.ClientProxyConnectionError, aiohttp.ClientHttpProxyError)):
        return ProxyError(f"Proxy failed for {url}: {exc}", url=url)
    if isinstance(exc, aiohttp.ClientPayloadError) or (
        partial_text and isinstance(exc, aiohttp.ServerDisconnectedError)
    ):
        return IncompleteResponseError(
            f"The answer from {url} was cut off after {len(partial_text)} characters "
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
