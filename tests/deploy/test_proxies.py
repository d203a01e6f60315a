"""nginx and Caddy, as deploy/ configures them, in front of gprochat as the unit runs it.

Each test runs once per proxy, over HTTPS on 127.0.0.1 with the site under /chat/.
Clients come from other loopback addresses (127.0.0.2, ...) so that the proxy sees
distinct clients, as it would on the internet.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import aiohttp

from gprochat.server.backends.echo import EchoBackend

from ..server.helpers import error_message, signed
from .conftest import PREFIX, Certificate, Nginx, Proxy, require, start_gprochat, tls_session

Deployment = Callable[..., Proxy]

#: 2 words a chunk, 0.2 s apart: an answer of about 12 chunks.
SLOW = ("--backend", "echo", "--echo-delay", "0.2")
MESSAGE = " ".join(f"word{index}" for index in range(20))


@asynccontextmanager
async def client(proxy: Proxy, source: str = "127.0.0.1") -> AsyncIterator[aiohttp.ClientSession]:
    """A session that trusts the test's certificate and connects from ``source``."""
    async with tls_session(proxy.certificate, source) as session:
        yield session


def streams_in_flight(proxy: Proxy) -> int:
    """What gprochat itself (not through the proxy) says is streaming now."""
    with urllib.request.urlopen(proxy.backend.base_url + "/healthz", timeout=10) as response:
        return int(json.load(response)["streams_in_flight"])


async def _first_chunk_and_answer(proxy: Proxy) -> tuple[int, bytes, str]:
    """Streams in flight in gprochat when the first chunk came through; that chunk; the answer."""
    async with client(proxy) as session, session.post(
        proxy.site_url + "/api/generate", data=json.dumps(signed(MESSAGE)),
        headers={"Content-Type": "text/plain;charset=UTF-8"},
    ) as response:
        assert response.status == 200, await response.text()
        first = await response.content.readany()
        # Asked of gprochat itself, not through the proxy.
        in_flight_at_first_chunk = streams_in_flight(proxy)
        rest = await response.read()
    return in_flight_at_first_chunk, first, (first + rest).decode()


async def test_an_answer_streams_through_the_proxy_unbuffered(deployment: Deployment) -> None:
    proxy = deployment(*SLOW)
    in_flight_at_first_chunk, first, answer = await _first_chunk_and_answer(proxy)
    assert answer == EchoBackend.PREFIX + MESSAGE
    assert first and MESSAGE not in first.decode()
    # The first chunk is here while gprochat is still generating the rest.
    assert in_flight_at_first_chunk == 1
    assert streams_in_flight(proxy) == 0


async def test_the_streaming_check_tells_a_buffering_proxy(certificate: Certificate) -> None:
    require("nginx", "nginx-light")
    backend = start_gprochat(*SLOW)
    try:
        proxy = Nginx(backend, certificate, changes={
            "proxy_buffering off;": "proxy_buffering on; proxy_ignore_headers X-Accel-Buffering;",
        })
        try:
            in_flight_at_first_chunk, _, answer = await _first_chunk_and_answer(proxy)
        finally:
            proxy.stop()
    finally:
        backend.stop()
    assert answer == EchoBackend.PREFIX + MESSAGE
    # Buffered: nothing came through before gprochat had written the whole answer.
    assert in_flight_at_first_chunk == 0


async def test_the_gateway_streams_through_the_prefix_unbuffered(deployment: Deployment) -> None:
    proxy = deployment(*SLOW)
    async with client(proxy) as session:
        async with session.get(proxy.site_url + "/v1/models") as response:
            assert response.status == 200
            models = await response.json()
        request = {"model": models["data"][0]["id"], "stream": True,
                   "messages": [{"role": "user", "content": MESSAGE}]}
        async with session.post(proxy.site_url + "/v1/chat/completions", json=request) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/event-stream")
            first_event = await response.content.readuntil(b"\n\n")
            in_flight_at_first_event = streams_in_flight(proxy)
            rest = await response.read()
    assert first_event.startswith(b"data: {")
    assert in_flight_at_first_event == 1
    events = [line.removeprefix(b"data: ") for line in (first_event + rest).split(b"\n\n") if line]
    assert events[-1] == b"[DONE]"
    text = "".join(json.loads(event)["choices"][0]["delta"].get("content") or "" for event in events[:-1])
    assert text.endswith(MESSAGE)


class _References(HTMLParser):
    """Every ``src`` and ``href`` in a page, and ``<body data-assets>``."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.assets = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value and not value.startswith("#"):
                self.urls.append(value)
            if tag == "body" and name == "data-assets" and value:
                self.assets = value


async def _check_the_page_and_every_asset_it_references(proxy: Proxy) -> set[str]:
    """Load the page through ``proxy``, then every URL it refers to; the URLs loaded."""
    page_url = proxy.site_url + "/"
    async with client(proxy) as session:
        async with session.get(page_url) as response:
            assert response.status == 200
            page = await response.text()
        references = _References()
        references.feed(page)
        assert len(references.urls) >= 6 and references.assets
        # Our modules import each other relatively; KaTeX's CSS refers to its fonts.
        pending = [urljoin(page_url, url) for url in references.urls]
        pending += [urljoin(page_url, references.assets + "/vendor/katex/katex.min.css")]
        seen: set[str] = set()
        while pending:
            url = pending.pop()
            if url in seen:
                continue
            seen.add(url)
            assert urlsplit(url).path.startswith(proxy.prefix), url
            async with session.get(url) as response:
                assert response.status == 200, url
                body = await response.read()
            if url.endswith(".js") and "/js/" in url:
                pending += [urljoin(url, name) for name in
                            re.findall(rb"""from\s+["'](\.{1,2}/[^"']+)["']""", body)
                            for name in [name.decode()]]
            if url.endswith(".css"):
                # KaTeX lists .woff and .ttf fallbacks that no browser needs; only .woff2 ships.
                pending += [urljoin(url, name.decode()) for name in
                            re.findall(rb"url\(([^)\"':]+\.(?:woff2|svg|png))\)", body)]
    assert sum(url.endswith(".js") for url in seen) >= 8
    assert any(url.endswith(".woff2") for url in seen)
    return seen


async def test_the_page_and_every_asset_it_references_load_under_the_prefix(
    deployment: Deployment,
) -> None:
    proxy = deployment("--backend", "echo")
    async with client(proxy) as session, session.get(proxy.site_url, allow_redirects=False) as response:
        assert response.status in (301, 308)
        assert urljoin(proxy.site_url, response.headers["Location"]) == proxy.site_url + "/"
    seen = await _check_the_page_and_every_asset_it_references(proxy)
    assert all(urlsplit(url).path.startswith(PREFIX) for url in seen)


async def test_the_site_at_the_root_as_the_guide_says(deployment: Deployment) -> None:
    proxy = deployment(*SLOW, at_the_root=True)
    assert proxy.site_url == proxy.url
    await _check_the_page_and_every_asset_it_references(proxy)
    in_flight_at_first_chunk, _, answer = await _first_chunk_and_answer(proxy)
    assert answer == EchoBackend.PREFIX + MESSAGE
    assert in_flight_at_first_chunk == 1


async def test_plain_http_is_redirected_to_https(deployment: Deployment) -> None:
    proxy = deployment("--backend", "echo")
    async with client(proxy) as session, session.get(
        f"http://127.0.0.1:{proxy.http_port}/chat/", allow_redirects=False
    ) as response:
        assert response.status in (301, 308)
        location = urlsplit(response.headers["Location"])
        assert (location.scheme, location.hostname, location.path) == ("https", "127.0.0.1", "/chat/")


async def _generate(proxy: Proxy, source: str, headers: dict[str, str] | None = None, *,
                    direct: bool = False) -> tuple[int, bytes]:
    """POST a signed message from ``source``, through the proxy or ``direct`` to gprochat."""
    base_url = proxy.backend.base_url if direct else proxy.site_url
    async with client(proxy, source) as session, session.post(
        base_url + "/api/generate", data=json.dumps(signed("Hi")),
        headers={"Content-Type": "text/plain;charset=UTF-8", **(headers or {})},
    ) as response:
        return response.status, await response.read()


async def test_rate_limits_follow_the_proxied_client_and_ignore_spoofed_addresses(
    deployment: Deployment,
) -> None:
    proxy = deployment("--backend", "echo", "--rate-limit", "2/minute")
    alice, bob, mallory = "127.0.0.2", "127.0.0.3", "127.0.0.4"
    # Through the proxy: Alice uses up her budget; a forged X-Forwarded-For does not
    # give her another (the proxy appends her real address, the right-most is believed).
    assert [(await _generate(proxy, alice))[0] for _ in range(2)] == [200, 200]
    status, body = await _generate(proxy, alice)
    assert status == 429 and error_message(body).startswith("Too many requests")
    assert (await _generate(proxy, alice, {"X-Forwarded-For": "198.51.100.7"}))[0] == 429
    # Bob, behind the same proxy, has a budget of his own.
    assert (await _generate(proxy, bob))[0] == 200
    # Straight to gprochat, from an address that is not the trusted proxy, the header
    # is ignored: Mallory is counted as herself whatever she claims to be.
    for forged in ("203.0.113.1", "203.0.113.2"):
        assert (await _generate(proxy, mallory, {"X-Forwarded-For": forged}, direct=True))[0] == 200
    assert (await _generate(proxy, mallory, {"X-Forwarded-For": "203.0.113.3"}, direct=True))[0] == 429
    # Each access-log line is written just after its answer is sent: wait for the eighth.
    deadline = time.monotonic() + 30
    while len(entries := proxy.backend.access_log("/api/generate")) < 8 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert [entry["client"] for entry in entries] == [alice] * 4 + [bob] + [mallory] * 3
