"""Images through ``Client`` / ``AsyncClient``: OpenAI ``image_url`` parts and g4f's ``images=``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from gprochat import AsyncClient, Client, ImageError
from gprochat.errors import ConfigurationError, InvalidParameterError, UnsupportedParameterError
from gprochat.images import Image

from .conftest import ServerFactory
from .image_samples import SVG, data_url, described, jpeg, png
from .scripted import LAST_CHUNK, RecordedRequest, ScriptedServer, chunk, head


def image_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("[image ")]


def asking(*parts: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"role": "system", "content": "Be terse."},
            {"role": "user", "content": [{"type": "text", "text": "What is this?"}, *parts]}]


def image_part(raw: bytes, mime_type: str = "image/png") -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": data_url(raw, mime_type), "detail": "auto"}}


def test_an_image_url_part_reaches_the_server_intact(make_server: ServerFactory) -> None:
    server = make_server()
    first, second = png(seed=21), jpeg(seed=22)
    with Client(base_url=server.base_url, max_retries=0) as client:
        answer = client.chat.completions.create(
            model="", messages=asking(image_part(first), image_part(second, "image/jpeg"))
        )
        content = answer.choices[0].message.content or ""
        assert "Be terse.\n\nWhat is this?\n[image 1: " in content
        assert image_lines(content) == [f"[image 1: {described(first)}]",
                                        f"[image 2: {described(second, 'image/jpeg')}]"]
        streamed = "".join(
            chunk.choices[0].delta.content or ""
            for chunk in client.chat.completions.create(
                model="", messages=asking(image_part(first)), stream=True)
        )
        assert image_lines(streamed) == [f"[image 1: {described(first)}]"]


async def test_async_client_with_image_url_parts_and_images(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    server = make_server()
    first, second = png(seed=23), png(seed=24)
    path = tmp_path / "second.png"
    path.write_bytes(second)
    async with AsyncClient(base_url=server.base_url, max_retries=0) as client:
        answer = await client.chat.completions.create(
            model="", messages=asking(image_part(first)), images=[path]
        )
    assert image_lines(answer.choices[0].message.content or "") == [
        f"[image 1: {described(first)}]", f"[image 2: {described(second)}]"
    ]


def test_g4f_image_and_image_name(make_server: ServerFactory) -> None:
    server = make_server()
    raw = png(seed=25)
    with Client(base_url=server.base_url, max_retries=0) as client:
        answer = client.chat.completions.create(
            model="", messages=[{"role": "user", "content": "Hi"}], image=raw, image_name="a.png"
        )
        assert image_lines(answer.choices[0].message.content or "") == [f"[image 1: {described(raw)}]"]
        with pytest.raises(ImageError, match=r"images\[0\] \(logo.svg\) is SVG"):
            client.chat.completions.create(
                model="", messages=[{"role": "user", "content": "Hi"}], image=SVG, image_name="logo.svg"
            )
        with pytest.raises(ConfigurationError, match="not image= and images="):
            client.chat.completions.create(
                model="", messages=[{"role": "user", "content": "Hi"}], image=raw, images=[raw]
            )


async def test_the_upstream_receives_the_image_byte_identical_in_each_turn() -> None:
    bodies: list[dict[str, Any]] = []

    async def script(request: RecordedRequest, writer: asyncio.StreamWriter) -> None:
        bodies.append(request.json())
        writer.write(head() + chunk(b"ok") + LAST_CHUNK)

    earlier, now = png(seed=26), jpeg(seed=27)
    messages = [
        {"role": "user", "content": [image_part(earlier), {"type": "text", "text": "And this?"}]},
        {"role": "assistant", "content": "A square."},
        {"role": "user", "content": [{"type": "text", "text": "Now "}, image_part(now, "image/jpeg"),
                                     {"type": "text", "text": "this one."}]},
    ]
    async with ScriptedServer(script) as server:
        async with AsyncClient(base_url=server.base_url, secret_key="k", max_retries=0) as client:
            await client.chat.completions.create(model="", messages=messages)
    assert bodies[0]["messages"] == [
        {"role": "user", "parts": [{"text": "And this?"}, Image.from_bytes(earlier).inline_part()]},
        {"role": "model", "parts": [{"text": "A square."}]},
        {"role": "user", "parts": [{"text": "Now this one."}, Image.from_bytes(now).inline_part()]},
    ]
    assert bodies[0]["messages"][2]["parts"][1]["inline_data"]["data"] == data_url(
        now, "image/jpeg").split(",", 1)[1]


@pytest.mark.parametrize(
    ("part", "match"),
    [
        ({"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
         r"messages\[1\].content\[1\] is a remote URL \(https://example.com/cat.png\): the "
         r"GPROChat provider sends only data URLs"),
        (image_part(SVG, "image/svg+xml"), r"messages\[1\].content\[1\] is SVG"),
        (image_part(b"plain text", "image/png"), r"messages\[1\].content\[1\] is text, not an image"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
async def test_a_bad_image_raises_at_create_and_sends_nothing(
    part: dict[str, Any], match: str, stream: bool
) -> None:
    async def script(request: RecordedRequest, writer: asyncio.StreamWriter) -> None:
        writer.write(head() + chunk(b"ok") + LAST_CHUNK)

    async with ScriptedServer(script) as server:
        async with AsyncClient(base_url=server.base_url, max_retries=0) as client:
            with pytest.raises(ImageError, match=match):
                await client.chat.completions.create(model="", messages=asking(part), stream=stream)
    assert server.requests == []


def test_a_flattened_conversation_keeps_its_images(make_server: ServerFactory) -> None:
    server = make_server()
    first, second = png(seed=28), png(seed=29)
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "One"}, image_part(first)]},
        {"role": "assistant", "content": "Seen."},
        {"role": "user", "content": [image_part(second), {"type": "text", "text": "Two"}]},
    ]
    with Client(base_url=server.base_url, history="flatten", max_retries=0) as client:
        answer = client.chat.completions.create(model="", messages=messages)
    content = answer.choices[0].message.content or ""
    assert "User: One\nAssistant: Seen.\nUser: Two\nAssistant:" in content
    assert image_lines(content) == [f"[image 1: {described(first)}]", f"[image 2: {described(second)}]"]


@pytest.mark.parametrize("kind", ["input_audio", "file"])
async def test_a_part_of_another_type_is_refused_naming_the_parts_it_takes(kind: str) -> None:
    async def script(request: RecordedRequest, writer: asyncio.StreamWriter) -> None:
        writer.write(head() + chunk(b"ok") + LAST_CHUNK)

    async with ScriptedServer(script) as server:
        async with AsyncClient(base_url=server.base_url, max_retries=0) as client:
            with pytest.raises(UnsupportedParameterError) as caught:
                await client.chat.completions.create(
                    model="", messages=asking(image_part(png(seed=30)), {"type": kind, kind: {}})
                )
    message = str(caught.value)
    assert f"messages[1].content[2] has type '{kind}'" in message
    assert "'image_url'" in message and "'text'" in message
    assert caught.value.param == "messages[1].content"
    assert server.requests == []


async def test_a_text_part_that_is_not_a_string_is_refused_not_sent_as_its_repr() -> None:
    async def script(request: RecordedRequest, writer: asyncio.StreamWriter) -> None:
        writer.write(head() + chunk(b"ok") + LAST_CHUNK)

    async with ScriptedServer(script) as server:
        async with AsyncClient(base_url=server.base_url, max_retries=0) as client:
            with pytest.raises(InvalidParameterError) as caught:
                await client.chat.completions.create(
                    model="", messages=asking(image_part(png(seed=31)), {"type": "text", "text": None})
                )
    assert caught.value.param == "messages[1].content[2].text"
    assert "NoneType, not a string" in str(caught.value)
    assert server.requests == []


def test_an_image_over_the_body_limit_is_a_413_that_names_images(make_server: ServerFactory) -> None:
    from gprochat import GPROChat, PayloadTooLargeError
    from gprochat.server import ServerConfig

    server = make_server(ServerConfig(max_body_bytes=600))
    picture = png(width=40, height=40, seed=32)
    assert len(picture) * 4 // 3 > 600  # the text alone fits: the image's base64 does not
    with pytest.raises(PayloadTooLargeError) as caught:
        GPROChat.create("", [{"role": "user", "content": "Hi"}], base_url=server.base_url,
                        images=[picture], max_retries=0)
    assert caught.value.status_code == 413
    assert "Request body too large" in str(caught.value)
    assert "fewer or smaller images" in str(caught.value)
