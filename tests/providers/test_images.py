"""Images through the provider: ``images=`` (g4f's convention) and ``image_url`` content parts."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from pathlib import Path
from typing import Any

import pytest

from gprochat import ConfigurationError, Deployment, GPROChat, ImageError, PayloadTooLargeError
from gprochat.images import Image
from gprochat.protocol import build_generate_request, generate_signature
from gprochat.providers import DeploymentRegistry
from gprochat.providers._images import encode_request
from gprochat.typing import Messages

from ..conftest import ServerFactory
from ..image_samples import SVG, data_url, described, jpeg, png
from ..scripted import FAULTS, LAST_CHUNK, Fleet, RecordedRequest, ScriptedServer, chunk, full_response, head

HELLO: Messages = [{"role": "user", "content": "What is in these pictures?"}]


def echo_lines(answer: str) -> list[str]:
    return [line for line in answer.splitlines() if line.startswith("[image ")]


async def answer(**kwargs: Any) -> str:
    kwargs.setdefault("max_retries", 0)
    messages = kwargs.pop("messages", HELLO)
    return await GPROChat.create_async("", messages, **kwargs)


async def test_bytes_a_path_and_a_data_url_arrive_intact(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    server = make_server()
    first, second, third = png(seed=1), jpeg(seed=2), png(8, 8, seed=3)
    path = tmp_path / "photo.jpg"
    path.write_bytes(second)
    text = await answer(base_url=server.base_url, images=[first, str(path), data_url(third)])
    assert text.splitlines()[0].endswith("What is in these pictures?")
    assert echo_lines(text) == [
        f"[image 1: {described(first)}]",
        f"[image 2: {described(second, 'image/jpeg')}]",
        f"[image 3: {described(third)}]",
    ]


async def test_g4f_media_pairs_file_objects_and_image_objects(make_server: ServerFactory) -> None:
    server = make_server()
    first, second, third = png(seed=4), png(seed=5), png(seed=6)
    media = [(first, "a.png"), (io.BytesIO(second), "b.png"), (Image.from_bytes(third), None)]
    text = await answer(base_url=server.base_url, media=media)
    assert echo_lines(text) == [
        f"[image {n}: {described(raw)}]" for n, raw in enumerate((first, second, third), 1)
    ]


def test_sync_create_completion_sends_images(make_server: ServerFactory) -> None:
    server = make_server()
    raw = png(seed=7)
    chunks = GPROChat.create_completion("", HELLO, base_url=server.base_url, images=[raw], max_retries=0)
    assert echo_lines("".join(chunks)) == [f"[image 1: {described(raw)}]"]


async def test_openai_image_url_parts_in_messages(make_server: ServerFactory) -> None:
    server = make_server()
    raw = png(seed=8)
    messages = [{"role": "user", "content": [
        {"type": "text", "text": "Describe "},
        {"type": "image_url", "image_url": {"url": data_url(raw)}},
        {"type": "text", "text": "this."},
    ]}]
    for history in ("native", "flatten"):
        text = await answer(base_url=server.base_url, messages=messages, history=history)
        assert text.splitlines()[0].endswith("Describe this.")
        assert echo_lines(text) == [f"[image 1: {described(raw)}]"]


async def test_the_upstream_receives_inline_data_byte_identical_after_the_text() -> None:
    bodies: list[dict[str, Any]] = []

    async def script(request: RecordedRequest, writer: asyncio.StreamWriter) -> None:
        bodies.append(request.json())
        writer.write(head() + chunk(b"ok") + LAST_CHUNK)

    first, second = png(seed=9), jpeg(seed=10)
    sent = data_url(second, "image/jpeg")
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "Earlier"},
                                     {"type": "image_url", "image_url": {"url": data_url(first)}}]},
        {"role": "assistant", "content": "Seen."},
        {"role": "user", "content": "And now?"},
    ]
    async with ScriptedServer(script) as server:
        await answer(base_url=server.base_url, messages=messages, history="native",
                     images=[sent], secret_key="k")
    body = bodies[0]
    assert body["messages"] == [
        {"role": "user", "parts": [
            {"text": "Earlier"},
            {"inline_data": {"mime_type": "image/png", "data": base64.b64encode(first).decode()}},
        ]},
        {"role": "model", "parts": [{"text": "Seen."}]},
        {"role": "user", "parts": [
            {"text": "And now?"},
            {"inline_data": {"mime_type": "image/jpeg", "data": sent.split(",", 1)[1]}},
        ]},
    ]
    # The signature covers the text only.
    assert body["sign"] == generate_signature(body["time"], "And now?", "k")


async def test_an_image_only_message_has_no_empty_text_part() -> None:
    bodies: list[dict[str, Any]] = []

    async def script(request: RecordedRequest, writer: asyncio.StreamWriter) -> None:
        bodies.append(request.json())
        writer.write(head() + chunk(b"ok") + LAST_CHUNK)

    raw = png(seed=11)
    async with ScriptedServer(script) as server:
        await answer(base_url=server.base_url, messages=[{"role": "user", "content": ""}], images=[raw])
    assert bodies[0]["messages"][-1]["parts"] == [Image.from_bytes(raw).inline_part()]


@pytest.mark.parametrize(
    ("images", "match"),
    [
        ([SVG], r"images\[0\] is SVG or other markup, not an image"),
        ([b"just some text\n"], r"images\[0\] is text, not an image"),
        ([b""], r"images\[0\] is empty"),
        (["/nonexistent/photo.png"], r"images\[0\]: cannot read /nonexistent/photo.png"),
        (["https://example.com/cat.png"], r"images\[0\] is a remote URL"),
        (["data:image/png;base64,not base64!"], r"images\[0\] is not valid base64"),
        ([png(), (SVG, "logo.svg")], r"images\[1\] \(logo.svg\) is SVG"),
        ([42], r"images\[0\] must be bytes, a file path or a data URL, not int"),
    ],
)
async def test_a_bad_image_raises_before_anything_is_sent(images: list[Any], match: str) -> None:
    async def script(request: RecordedRequest, writer: asyncio.StreamWriter) -> None:
        writer.write(head() + chunk(b"ok") + LAST_CHUNK)

    async with ScriptedServer(script) as server:
        with pytest.raises(ImageError, match=match):
            await answer(base_url=server.base_url, images=images)
        with pytest.raises(ImageError, match=match):
            list(GPROChat.create_completion("", HELLO, base_url=server.base_url, images=images))
    assert server.requests == [] and server.connections == 0


async def test_a_text_file_renamed_png_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("not a picture")
    with pytest.raises(ImageError, match=r"images\[0\] notes.png is text, not an image"):
        await answer(base_url="http://127.0.0.1:9", images=[path])


@pytest.mark.parametrize(
    ("part", "match"),
    [
        ({"type": "image_url", "image_url": {"url": "http://example.com/a.png"}},
         r"messages\[0\].content\[1\] is a remote URL \(http://example.com/a.png\): the GPROChat "
         r"provider sends only data URLs, bytes or files"),
        ({"type": "image_url", "image_url": {"url": data_url(SVG, "image/svg+xml")}},
         r"messages\[0\].content\[1\] is SVG"),
        ({"type": "image_url", "image_url": {"url": data_url(png(), "image/jpeg")}},
         r"declared 'image/jpeg' but its bytes are image/png"),
        ({"type": "image_url", "image_url": {}}, r"image_url part without a URL"),
    ],
)
@pytest.mark.parametrize("history", ["native", "flatten"])
async def test_a_bad_image_url_part_raises_before_anything_is_sent(
    part: dict[str, Any], match: str, history: str
) -> None:
    async def script(request: RecordedRequest, writer: asyncio.StreamWriter) -> None:
        writer.write(head() + chunk(b"ok") + LAST_CHUNK)

    messages = [{"role": "user", "content": [{"type": "text", "text": "See"}, part]}]
    async with ScriptedServer(script) as server:
        with pytest.raises(ImageError, match=match):
            await answer(base_url=server.base_url, messages=messages, history=history)
    assert server.requests == []


async def test_images_and_media_together_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="either images= or media="):
        await answer(base_url="http://127.0.0.1:9", images=[png()], media=[png()])


async def test_failover_resends_the_same_images(make_server: ServerFactory) -> None:
    server = make_server()
    first, second = png(seed=12), jpeg(seed=13)
    async with Fleet({"failing": FAULTS["failing"], "rate-limited": FAULTS["rate-limited"]}) as fleet:
        listed = [Deployment(fleet.url("failing")), Deployment(fleet.url("rate-limited")),
                  Deployment(server.base_url)]
        text = await GPROChat.create_async(
            "", HELLO, deployments=listed, images=[first, second], registry=DeploymentRegistry()
        )
        sent = [fleet.servers[name].requests[0].json()["messages"][-1]["parts"]
                for name in ("failing", "rate-limited")]
    expected = [{"text": HELLO[0]["content"]}, Image.from_bytes(first).inline_part(),
                Image.from_bytes(second).inline_part()]
    assert sent == [expected, expected]
    assert echo_lines(text) == [f"[image 1: {described(first)}]",
                                f"[image 2: {described(second, 'image/jpeg')}]"]


async def test_a_retry_resends_the_same_images() -> None:
    async def script(request: RecordedRequest, writer: asyncio.StreamWriter) -> None:
        if len(server.requests) == 1:
            writer.write(full_response(503, b'{"error": {"message": "busy"}}', {"Retry-After": "0"}))
        else:
            writer.write(head() + chunk(b"ok") + LAST_CHUNK)

    raw = png(seed=14)
    async with ScriptedServer(script) as server:
        assert await answer(base_url=server.base_url, images=[raw], max_retries=1) == "ok"
    first, second = (request.json() for request in server.requests)
    assert first["messages"] == second["messages"]
    assert first["messages"][-1]["parts"][1] == Image.from_bytes(raw).inline_part()
    assert first["time"] != second["time"]  # signed afresh, same images


async def test_the_servers_image_limits_come_back_as_typed_errors(make_server: ServerFactory) -> None:
    server = make_server(max_image_bytes=200, max_images=2)
    with pytest.raises(PayloadTooLargeError, match=r"over the limit of 200 bytes"):
        await answer(base_url=server.base_url, images=[png(40, 40, seed=15)])
    with pytest.raises(PayloadTooLargeError, match=r"Too many images: 3"):
        await answer(base_url=server.base_url, images=[png(seed=n) for n in range(3)])


@pytest.mark.parametrize(
    "wire",
    [
        [{"role": "user", "parts": [{"text": 'quotes "data": "" and \\"data\\": \\"\\" é 😀'},
                                    Image.from_bytes(png(seed=16)).inline_part()]}],
        [{"role": "user", "parts": [Image.from_bytes(png(seed=17)).inline_part()]},
         {"role": "model", "parts": [{"text": "ok"}]},
         {"role": "user", "parts": [{"text": "x"}, {"inline_data": {"mime_type": "image/png", "data": ""}},
                                    {"inline_data": {"mime_type": "image/png", "data": 'not "base64"'}},
                                    Image.from_bytes(jpeg(seed=18)).inline_part()]}],
    ],
)
def test_the_spliced_body_is_exactly_what_json_gives(wire: list[dict[str, Any]]) -> None:
    encoder = json.JSONEncoder(ensure_ascii=False)
    body = build_generate_request(wire, timestamp=1, secret_key="k", password='p"w')
    assert encode_request(body, encoder) == encoder.encode(body).encode()


def test_a_data_url_scheme_in_capitals_is_an_image_part() -> None:
    from gprochat.protocol import message_content

    picture = png(seed=21)
    url = data_url(picture, "image/png")
    text, images = message_content(
        [{"type": "text", "text": "See"}, {"type": "image_url", "image_url": {"url": "DATA:" + url[5:]}}], 0
    )
    assert text == "See"
    assert [part["inline_data"]["mime_type"] for part in images] == ["image/png"]
    assert base64.b64decode(images[0]["inline_data"]["data"]) == picture
