"""The one table that turns transport exceptions into ours (``providers/_http.py``).

The behaviour over real sockets is tested where each failure happens (timeouts,
proxies, cut answers...); this checks the table itself: row order and the catch-all.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from gprochat import errors
from gprochat.providers._http import (
    _TRANSLATIONS,
    _Call,
    _TextTail,
    _Translating,
    translate_error,
    translating,
)
from gprochat.providers._proxy import resolve_proxy
from gprochat.providers._timeouts import Timeout

URL = "http://127.0.0.1:1/api/generate"


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (aiohttp.ClientPayloadError("cut"), errors.IncompleteResponseError),
        (aiohttp.ServerDisconnectedError(), errors.ConnectError),
        (aiohttp.InvalidURL("http://:80"), errors.ConfigurationError),
        (UnicodeError("label empty or too long"), errors.ConfigurationError),
        (asyncio.TimeoutError(), errors.TimeoutError),
        (aiohttp.ServerTimeoutError("read"), errors.TimeoutError),
        (ConnectionResetError(104, "reset"), errors.TransportError),
        (EOFError(), errors.TransportError),
        (aiohttp.ClientResponseError(None, (), status=400), errors.TransportError),  # type: ignore[arg-type]
    ],
)
def test_each_transport_failure_becomes_one_of_ours(exc: BaseException, expected: type) -> None:
    translated = translate_error(exc, URL)
    assert type(translated) is expected
    assert URL in str(translated) or isinstance(translated, errors.ConfigurationError)


def test_the_same_exception_reads_differently_with_context() -> None:
    # A disconnect after some text is a cut answer; before any, a failed connection.
    tail = _TextTail()
    tail.add("partial")
    with pytest.raises(errors.IncompleteResponseError) as cut:
        with _Translating(_Call(URL, Timeout(), None, tail)):
            raise aiohttp.ServerDisconnectedError()
    assert cut.value.partial_text == "partial"
    with pytest.raises(errors.ConnectError, match="closed the connection without answering"):
        with _Translating(_Call(URL, Timeout(), None, _TextTail())):
            raise aiohttp.ServerDisconnectedError()


def test_socks_context_makes_an_eof_a_proxy_error() -> None:
    proxy = resolve_proxy("socks5://user:pw@127.0.0.1:1080")
    with pytest.raises(errors.ProxyError, match="hung up during the SOCKS handshake"):
        with translating(URL, Timeout(), proxy):
            raise asyncio.IncompleteReadError(b"", 2)
    with pytest.raises(errors.TransportError) as plain:
        with translating(URL, Timeout()):
            raise asyncio.IncompleteReadError(b"", 2)
    assert not isinstance(plain.value, errors.ProxyError)


def test_what_the_table_does_not_know_passes_through() -> None:
    with pytest.raises(asyncio.CancelledError):
        with translating(URL, Timeout()):
            raise asyncio.CancelledError()
    with pytest.raises(KeyError):
        with translating(URL, Timeout()):
            raise KeyError("a bug of ours stays a bug")
    with pytest.raises(errors.BadRequestError):
        with translating(URL, Timeout()):
            raise errors.BadRequestError("ours", status_code=400)
    assert _TRANSLATIONS[-1][0][0] is aiohttp.ClientError  # the catch-all is last
