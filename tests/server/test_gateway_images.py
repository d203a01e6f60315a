"""Images on the OpenAI gateway: data URLs, hostile image parts, remote URLs (off, then on).

Everything runs on 127.0.0.1. The tests that name private or link-local addresses
(10.0.0.1, 169.254.169.254) prove the fetcher refuses them before connecting: an audit
hook records every ``socket.connect`` this process makes, and none may leave loopback.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ipaddress
import json
import sys
from collections.abc import Iterator
from typing import Any, cast

import pytest

from gprochat.server import BackgroundServer, ServerConfig, create_app
from gprochat.server.backends import Backend, GeminiBackend, OpenAIBackend
from gprochat.server.gateway.fetch import ImageFetcher, forbidden_reason

from ..conftest import ServerFactory
from ..scripted import RecordedRequest, ScriptedServer, chunk, full_response, head
from .backends.conftest import ScriptedUpstream
from .backends.test_gemini import answer as gemini_answer
from .backends.test_openai import answer as openai_answer
from .test_gateway import HELLO, ScriptedBackend, post, sse_events

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 3
JPEG = b"\xff\xd8\xff\xe0" + bytes(500)
SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
MAX_IMAGE_BYTES = 50_000


def data_url(raw: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(raw).decode()}"


def described(raw: bytes, number: int = 1, mime: str = "image/png") -> str:
    """The echo backend's line for an image it received intact."""
    return f"[image {number}: {mime}, {len(raw)} bytes, sha256 {hashlib.sha256(raw).hexdigest()}]"


def image_part(url: Any, **extra: Any) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url, **extra}}


def asking(*parts: dict[str, Any], text: str = "What is this?") -> dict[str, Any]:
    content = [{"type": "text", "text": text}, *parts]
    return {"model": "echo", "messages": [{"role": "user", "content": content}]}


@pytest.fixture
def server(make_server: ServerFactory) -> BackgroundServer:
    return make_server(rate_limit=None, max_image_bytes=MAX_IMAGE_BYTES)


# -- data URLs -------------------------------------------------------------------------


async def test_a_data_url_image_reaches_the_backend_intact(server: BackgroundServer) -> None:
    status, body, _ = await post(server, asking(image_part(data_url(PNG), detail="high")))
    assert status == 200, body
    answer = body["choices"][0]["message"]["content"]
    assert answer.endswith("What is this?\n" + described(PNG)), answer


# Larger than the slices the upstream body is written in (64 Ki characters), so the
# base64 goes out in several pieces taken from the request's data URL where it is.
BIG = b"\x89PNG\r\n\x1a\n" + hashlib.sha256(b"big").digest() * 7_000


@pytest.mark.parametrize("kind", ["gemini", "openai"])
async def test_a_data_url_image_goes_upstream_byte_identical(
    make_server: ServerFactory, kind: str
) -> None:
    upstream = ScriptedUpstream()
    await upstream.start()
    try:
        backend: Backend
        if kind == "gemini":
            upstream.respond_events(gemini_answer("A big picture."))
            backend = GeminiBackend(api_key="AIza-test", base_url=upstream.url)
        else:
            upstream.respond_events(openai_answer("A big picture."))
            backend = OpenAIBackend(base_url=upstream.url + "/v1", api_key="sk-test", model="gpt-4o")
        server = make_server(rate_limit=None, max_image_bytes=len(BIG), backend=backend)
        request = {**asking(image_part(data_url(BIG))), "model": ""}
        status, body, _ = await post(server, request)
        assert status == 200, body
        assert body["choices"][0]["message"]["content"] == "A big picture."
    finally:
        await upstream.stop()
    [received] = upstream.requests
    if kind == "gemini":
        [turn] = received.json["contents"]
        assert turn["parts"] == [
            {"inline_data": {"mime_type": "image/png", "data": base64.b64encode(BIG).decode()}},
            {"text": "What is this?"},
        ]
    else:
        assert received.json["messages"][-1]["content"] == [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": data_url(BIG)}},
        ]


async def test_several_images_streamed_in_order(server: BackgroundServer) -> None:
    request = asking(image_part(data_url(JPEG, "image/jpeg")), image_part(data_url(PNG)))
    events = await sse_events(server, request)
    text = "".join(
        json.loads(e)["choices"][0]["delta"].get("content") or ""
        for e in events if e != "[DONE]" and json.loads(e)["choices"]
    )
    assert text.endswith(described(JPEG, 1, "image/jpeg") + "\n" + described(PNG, 2)), text


class TextOnlyBackend(ScriptedBackend):
    accepts_images = False


async def test_a_backend_that_cannot_see_images_refuses_them_before_answering(
    make_server: ServerFactory,
) -> None:
    backend = TextOnlyBackend(["never"])
    server = make_server(ServerConfig(rate_limit=None), backend=backend)
    messages = [{"role": "user", "content": [{"type": "text", "text": "Look"},
                                             image_part(data_url(PNG))]}]
    status, body, _ = await post(server, {"model": "scripted", "messages": messages})
    assert status == 400, body
    assert "cannot see images" in body["error"]["message"]
    assert body["error"]["param"] == "messages"
    assert backend.conversations == []  # never asked
    status, body, _ = await post(server, {"model": "scripted", "messages": HELLO})
    assert status == 200, body  # text alone is answered


async def test_history_images_stay_with_their_turns(make_server: ServerFactory) -> None:
    backend = ScriptedBackend(["ok"])
    server = make_server(ServerConfig(rate_limit=None), backend=backend)
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [image_part(data_url(JPEG, "image/jpeg"))]},
        {"role": "user", "content": [{"type": "text", "text": "and"}, image_part(data_url(PNG))]},
        {"role": "assistant", "content": "Two pictures."},
        {"role": "user", "content": [image_part(data_url(PNG)), {"type": "text", "text": "Again"}]},
    ]
    status, body, _ = await post(server, {"model": "scripted", "messages": messages})
    assert status == 200, body
    (conversation,) = backend.conversations
    first, reply = conversation.history
    # Two user messages in a row become one turn, their images kept in order.
    assert (first.role, first.text) == ("user", "\n\nand")
    assert [(i.mime_type, i.sha256) for i in first.images] == [
        ("image/jpeg", hashlib.sha256(JPEG).hexdigest()),
        ("image/png", hashlib.sha256(PNG).hexdigest()),
    ]
    assert (reply.role, reply.images) == ("model", ())
    assert conversation.message == "Again"
    assert [i.sha256 for i in conversation.images] == [hashlib.sha256(PNG).hexdigest()]
    # The base64 text is the one sent, not decoded and encoded again.
    assert conversation.images[0].data == base64.b64encode(PNG).decode()


@pytest.mark.parametrize("role", ["system", "developer", "assistant"])
async def test_an_image_outside_a_user_message_is_refused(server: BackgroundServer, role: str) -> None:
    messages = [
        {"role": role, "content": [image_part(data_url(PNG))]},
        {"role": "user", "content": "Hi"},
    ]
    status, body, _ = await post(server, {"model": "echo", "messages": messages})
    assert status == 400, body
    assert body["error"]["param"] == "messages[0].content[0]"
    assert "user messages only" in body["error"]["message"]


_B64 = base64.b64encode(PNG).decode()

# (name, image part, status, param, words the message must hold)
HOSTILE = [
    ("invalid base64", image_part("data:image/png;base64," + _B64[:-4] + "!!!!"), 400,
     "messages[0].content[1]", "not valid base64"),
    ("base64 with whitespace", image_part("data:image/png;base64," + _B64[:40] + "\n" + _B64[40:]),
     400, "messages[0].content[1]", "not valid base64"),
    ("not base64", image_part("data:image/png," + "%89PNG"), 400,
     "messages[0].content[1].image_url.url", "without ';base64'"),
    ("no comma", image_part("data:image/png;base64"), 400,
     "messages[0].content[1].image_url.url", "not a valid data URL"),
    ("wrong magic", image_part(data_url(JPEG, "image/png")), 400, "messages[0].content[1]",
     "declared 'image/png' but its bytes are image/jpeg"),
    ("text renamed", image_part(data_url(b"just some text", "image/png")), 400,
     "messages[0].content[1]", "is text, not an image"),
    ("svg", image_part(data_url(SVG, "image/svg+xml")), 400, "messages[0].content[1]", "SVG"),
    ("empty", image_part("data:image/png;base64,"), 400, "messages[0].content[1]", "is empty"),
    ("over the limit", image_part(data_url(PNG + bytes(MAX_IMAGE_BYTES)), ), 413,
     "messages[0].content[1]", f"over the limit of {MAX_IMAGE_BYTES} bytes: send a smaller image"),
    ("javascript", image_part("javascript:alert(1)"), 400,
     "messages[0].content[1].image_url.url", "not javascript:"),
    ("file", image_part("file:///etc/passwd"), 400, "messages[0].content[1].image_url.url",
     "not file:"),
    ("ftp", image_part("ftp://127.0.0.1/x.png"), 400, "messages[0].content[1].image_url.url",
     "not ftp:"),
    ("bare words", image_part("a picture of a cat"), 400,
     "messages[0].content[1].image_url.url", "must be a data URL"),
    ("missing url", {"type": "image_url", "image_url": {"detail": "low"}}, 400,
     "messages[0].content[1].image_url.url", "is missing"),
    ("url not a string", image_part(["data:image/png;base64,AAAA"]), 400,
     "messages[0].content[1].image_url.url", "is list"),
    ("url empty", image_part(""), 400, "messages[0].content[1].image_url.url", "is empty"),
    ("image_url a string", {"type": "image_url", "image_url": data_url(PNG)}, 400,
     "messages[0].content[1].image_url", "must be an object"),
    ("no image_url", {"type": "image_url"}, 400, "messages[0].content[1].image_url",
     "not null"),
    ("remote, fetching off", image_part("https://example.com/cat.png"), 400,
     "messages[0].content[1].image_url.url", "start the server with --fetch-image-urls"),
    ("remote loopback, fetching off", image_part("http://127.0.0.1:9/x.png"), 400,
     "messages[0].content[1].image_url.url", "does not fetch image URLs"),
    ("part without a type", {"image_url": {"url": data_url(PNG)}}, 400,
     "messages[0].content[1].type", "only text parts"),
]


@pytest.mark.parametrize(
    ("part", "status", "param", "says"),
    [row[1:] for row in HOSTILE],
    ids=[row[0] for row in HOSTILE],
)
async def test_hostile_image_parts_are_refused_naming_the_part(
    server: BackgroundServer, part: dict[str, Any], status: int, param: str, says: str
) -> None:
    answer_status, body, _ = await post(server, asking(part))
    assert answer_status == status, body
    error = body["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert says in error["message"], error["message"]


async def test_a_thousand_tiny_images_are_refused_before_any_is_decoded(
    server: BackgroundServer,
) -> None:
    tiny = image_part(data_url(PNG[:16]))
    # The last one is not even base64: the count is refused first.
    parts = [tiny] * 999 + [image_part("data:image/png;base64,!!!!")]
    status, body, _ = await post(server, asking(*parts))
    assert status == 413, body
    assert body["error"]["param"] == "messages"
    assert "Too many images: 1000" in body["error"]["message"]
    assert "at most 16 per request (--max-images)" in body["error"]["message"]


async def test_images_on_two_messages_count_together(make_server: ServerFactory) -> None:
    server = make_server(rate_limit=None, max_images=2)
    tiny = image_part(data_url(PNG[:16]))
    messages = [
        {"role": "user", "content": [tiny, tiny]},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [tiny]},
    ]
    status, body, _ = await post(server, {"model": "echo", "messages": messages})
    assert status == 413 and "Too many images: 3" in body["error"]["message"], body


# -- remote URLs with --fetch-image-urls --------------------------------------------------

_connects: list[Any] = []
_recording = False


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _recording and event == "socket.connect":
        _connects.append(args[1])


sys.addaudithook(_audit)


@pytest.fixture
def connects() -> Iterator[list[Any]]:
    """Every address this process connects to while the test runs."""
    global _recording
    _connects.clear()
    _recording = True
    try:
        yield _connects
    finally:
        _recording = False


def _loopback_only(addresses: list[Any]) -> bool:
    return all(
        isinstance(address, tuple) and ipaddress.ip_address(address[0]).is_loopback
        for address in addresses
    )


@pytest.fixture
def fetching(make_server: ServerFactory) -> BackgroundServer:
    """``--fetch-image-urls`` as the command line gives it: no address is let through."""
    return make_server(rate_limit=None, max_image_bytes=MAX_IMAGE_BYTES, fetch_image_urls=True)


def fetching_from_loopback(timeout: float = 30.0) -> BackgroundServer:
    """A server whose fetcher lets 127.0.0.1 through (the test-only ``allowed_networks``)."""
    config = ServerConfig(rate_limit=None, max_image_bytes=MAX_IMAGE_BYTES, fetch_image_urls=True)
    app = create_app(config)
    app.state.image_fetcher = ImageFetcher(
        max_bytes=MAX_IMAGE_BYTES, timeout=timeout,
        allowed_networks=[ipaddress.ip_network("127.0.0.0/8")],
    )
    return BackgroundServer(app=app).start()


async def serving(raw: bytes, mime: str = "image/png") -> Any:
    async def script(request: RecordedRequest, writer: asyncio.StreamWriter) -> None:
        writer.write(full_response(200, raw, {"Content-Type": mime}))

    return ScriptedServer(script)


async def test_loopback_addresses_are_refused_without_connecting(
    fetching: BackgroundServer, connects: list[Any]
) -> None:
    async with await serving(PNG) as image_server:
        port = image_server.base_url.rsplit(":", 1)[1]
        urls = {
            f"http://127.0.0.1:{port}/cat.png": "127.0.0.1 is a loopback address",
            f"http://localhost:{port}/cat.png": "(it resolves to ",
            f"http://[::1]:{port}/cat.png": "::1 is a loopback address",
            f"http://2130706433:{port}/cat.png": "(it resolves to 127.0.0.1) is a loopback",
            f"http://[::ffff:127.0.0.1]:{port}/cat.png": "loopback (as ::ffff:",
            f"http://0.0.0.0:{port}/cat.png": "unspecified",
        }
        for url, says in urls.items():
            status, body, _ = await post(fetching, asking(image_part(url)))
            assert status == 400, (url, body)
            assert body["error"]["param"] == "messages[0].content[1]"
            assert says in body["error"]["message"], (url, body)
            assert "public addresses only" in body["error"]["message"]
        assert image_server.connections == 0
    assert _loopback_only(connects), connects


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://10.0.0.1/cat.png", "10.0.0.1 is a private address"),
        ("http://192.168.1.1/cat.png", "private address"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local address"),
        ("http://[fe80::1]/cat.png", "link-local"),
        ("http://[fd00::1]/cat.png", "private"),
        ("http://100.64.0.1/cat.png", "not globally routable"),
        ("http://224.0.0.1/cat.png", "multicast"),
        ("http://[::ffff:169.254.169.254]/x", "link-local (as ::ffff:"),
        ("http://[64:ff9b::a00:1]/x", "private (as 64:ff9b::a00:1)"),
        ("http://[2002:a00:1::]/x", "private (as 2002:a00:1::)"),
    ],
)
async def test_private_and_link_local_addresses_are_refused_before_connecting(
    fetching: BackgroundServer, connects: list[Any], url: str, says: str
) -> None:
    status, body, _ = await post(fetching, asking(image_part(url)))
    assert status == 400, body
    assert says in body["error"]["message"], body
    # Only our own loopback exchange with the server: nothing went to that address.
    assert connects and _loopback_only(connects), connects


def test_forbidden_reasons() -> None:
    def reason(text: str) -> Any:
        return forbidden_reason(ipaddress.ip_address(text))

    assert reason("93.184.215.14") is None
    assert reason("2606:4700::1111") is None
    assert reason("127.8.9.10") == "loopback"
    assert reason("172.16.0.1") == "private"
    assert reason("255.255.255.255") is not None
    assert reason("::") == "unspecified"
    assert reason("192.0.2.1") is not None  # documentation
    assert reason("::ffff:8.8.8.8") is None


async def test_a_public_looking_fetch_is_made_and_checked_like_any_image() -> None:
    server = fetching_from_loopback()
    try:
        async with await serving(PNG) as image_server:
            status, body, _ = await post(server, asking(image_part(image_server.base_url + "/cat.png")))
            assert status == 200, body
            assert body["choices"][0]["message"]["content"].endswith(described(PNG))
            (request,) = image_server.requests
            assert request.headers["accept-encoding"] == "identity"
        async with await serving(SVG, "image/png") as image_server:
            status, body, _ = await post(server, asking(image_part(image_server.base_url + "/x")))
            assert status == 400 and "SVG" in body["error"]["message"], body
            assert body["error"]["param"] == "messages[0].content[1]"
    finally:
        server.stop()


async def test_a_redirect_is_not_followed() -> None:
    async def redirect(request: RecordedRequest, writer: asyncio.StreamWriter) -> None:
        writer.write(full_response(302, b"", {"Location": "http://169.254.169.254/latest/"}))

    server = fetching_from_loopback()
    try:
        async with ScriptedServer(redirect) as image_server:
            status, body, _ = await post(server, asking(image_part(image_server.base_url + "/x")))
            assert status == 400, body
            assert "redirects are not followed" in body["error"]["message"]
            assert "169.254.169.254" in body["error"]["message"]
            assert len(image_server.requests) == 1
    finally:
        server.stop()


async def test_an_error_status_is_a_400() -> None:
    async def missing(request: RecordedRequest, writer: asyncio.StreamWriter) -> None:
        writer.write(full_response(404, b"no such picture"))

    server = fetching_from_loopback()
    try:
        async with ScriptedServer(missing) as image_server:
            status, body, _ = await post(server, asking(image_part(image_server.base_url + "/x")))
            assert status == 400 and "answered HTTP 404" in body["error"]["message"], body
    finally:
        server.stop()


async def test_a_huge_answer_is_cut_at_the_limit() -> None:
    async def endless(request: RecordedRequest, writer: asyncio.StreamWriter) -> None:
        writer.write(head(200, {"Content-Type": "image/png"}) + chunk(PNG))
        while True:  # never ends: the fetcher must stop reading
            writer.write(chunk(bytes(16384)))
            await writer.drain()

    server = fetching_from_loopback()
    try:
        async with ScriptedServer(endless) as image_server:
            status, body, _ = await post(server, asking(image_part(image_server.base_url + "/x")))
            assert status == 413, body
            assert f"over the limit of {MAX_IMAGE_BYTES} bytes" in body["error"]["message"]
            assert "(--max-image-bytes)" in body["error"]["message"]
            assert body["error"]["param"] == "messages[0].content[1]"
            # The fetcher hung up: the endless writer ended on a closed connection.
            assert await disconnects_of(image_server) == 1
    finally:
        server.stop()


async def disconnects_of(image_server: ScriptedServer) -> int:
    """The scripted server's disconnects once it has seen one (or after 5 s of waiting)."""
    for _ in range(500):
        if image_server.disconnects:
            break
        await asyncio.sleep(0.01)
    return int(image_server.disconnects)


async def test_a_declared_length_over_the_limit_is_refused_before_reading() -> None:
    async def lying(request: RecordedRequest, writer: asyncio.StreamWriter) -> None:
        writer.write(head(200, {"Content-Length": str(10 * MAX_IMAGE_BYTES)}, chunked=False) + PNG)
        await asyncio.sleep(3600)

    server = fetching_from_loopback()
    try:
        async with ScriptedServer(lying) as image_server:
            status, body, _ = await post(server, asking(image_part(image_server.base_url + "/x")))
            assert status == 413 and f"is {10 * MAX_IMAGE_BYTES} bytes" in body["error"]["message"], body
    finally:
        server.stop()


async def test_a_slow_answer_is_cut_at_the_time_limit() -> None:
    async def trickling(request: RecordedRequest, writer: asyncio.StreamWriter) -> None:
        writer.write(head(200, {"Content-Type": "image/png"}) + chunk(PNG[:8]))
        while True:
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(chunk(b"\x00"))

    server = fetching_from_loopback(timeout=0.5)
    try:
        async with ScriptedServer(trickling) as image_server:
            status, body, _ = await post(server, asking(image_part(image_server.base_url + "/x")))
            assert status == 400, body
            assert "took longer than 0.5 seconds (--image-fetch-timeout)" in body["error"]["message"]
            assert await disconnects_of(image_server) == 1
    finally:
        server.stop()


async def test_remote_and_data_images_together_keep_their_order() -> None:
    server = fetching_from_loopback()
    try:
        async with await serving(JPEG, "image/jpeg") as image_server:
            request = asking(
                image_part(data_url(PNG)),
                image_part(image_server.base_url + "/a.jpg"),
                image_part(data_url(PNG[:100])),
            )
            status, body, _ = await post(server, request)
            assert status == 200, body
            assert body["choices"][0]["message"]["content"].endswith(
                "\n".join([described(PNG, 1), described(JPEG, 2, "image/jpeg"),
                           described(PNG[:100], 3)])
            )
    finally:
        server.stop()


async def test_a_host_name_is_connected_to_at_the_addresses_checked(connects: list[Any]) -> None:
    # localhost resolves to 127.0.0.1 (and perhaps ::1): the fetcher resolves it once,
    # checks every address, and its HTTP client connects to those addresses only.
    config = ServerConfig(rate_limit=None, max_image_bytes=MAX_IMAGE_BYTES, fetch_image_urls=True)
    app = create_app(config)
    app.state.image_fetcher = ImageFetcher(
        max_bytes=MAX_IMAGE_BYTES, timeout=30,
        allowed_networks=[ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")],
    )
    server = BackgroundServer(app=app).start()
    try:
        async with await serving(PNG) as image_server:
            port = int(image_server.base_url.rsplit(":", 1)[1])
            status, body, _ = await post(server, asking(image_part(f"http://localhost:{port}/c.png")))
            assert status == 200, body
            assert body["choices"][0]["message"]["content"].endswith(described(PNG))
            (request,) = image_server.requests
            assert request.headers["host"] == f"localhost:{port}"
    finally:
        server.stop()
    assert any(address[1] == port for address in connects if isinstance(address, tuple))
    assert _loopback_only(connects), connects


ODD_IMAGE_URLS: list[Any] = [
    1, True, [], None, {"url": 1}, {"url": {"url": "data:"}}, {"url": "data:"},
    {"url": "data:,"}, {"url": "data:;base64,"}, {"url": "data:image/png;base64,===="},
    {"url": "data:image/png;base64;x," + _B64},
    {"url": "\x00"}, {"url": "http://"}, {"url": "https://[::1"},
    {"url": "http:///cat.png"}, {"url": "http://127.0.0.1:99999/"}, {"url": "HTTP://[::]/x"},
    {"url": "http://user:secret@[::1]/x?token=abc"},
]


@pytest.mark.parametrize("fetch", [False, True], ids=["fetching off", "fetching on"])
async def test_odd_image_urls_are_4xx_never_5xx(make_server: ServerFactory, fetch: bool) -> None:
    server = make_server(rate_limit=None, max_image_bytes=MAX_IMAGE_BYTES, fetch_image_urls=fetch)
    for image_url in ODD_IMAGE_URLS:
        status, body, _ = await post(server, asking({"type": "image_url", "image_url": image_url}))
        assert 400 <= status < 500, (image_url, body)
        assert str(body["error"]["param"]).startswith("messages[0].content[1]"), (image_url, body)
        assert "secret" not in body["error"]["message"] and "token" not in body["error"]["message"]
    for valid in ("DATA:IMAGE/PNG;BASE64,", "data:image/png;name=cat.png;base64,"):
        part = {"type": "image_url", "image_url": {"url": valid + _B64}}
        status, body, _ = await post(server, asking(part))
        assert status == 200 and body["choices"][0]["message"]["content"].endswith(described(PNG)), body


async def test_gprochat_serve_fetch_image_urls_is_wired() -> None:
    """The flag turns fetching on (a loopback URL is now refused for its address, not
    because fetching is off); without it, remote URLs are refused as off."""
    from ..processes import clean_env, served

    async with await serving(PNG) as image_server:
        part = image_part(image_server.base_url + "/cat.png")
        for args, env, says in [
            ((), {}, "does not fetch image URLs"),
            (("--fetch-image-urls",), {}, "127.0.0.1 is a loopback address"),
            ((), {"GPROCHAT_FETCH_IMAGE_URLS": "1"}, "127.0.0.1 is a loopback address"),
        ]:
            with served(*args, "--rate-limit", "off", env=clean_env(**env)) as base_url:
                status, body, _ = await post(cast(BackgroundServer, _Address(base_url)), asking(part))
            assert status == 400 and says in body["error"]["message"], (args, env, body)
        assert image_server.connections == 0


class _Address:
    """What ``post`` needs of a server: its base URL."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
