"""Images from each interface, through our server, to a scripted Gemini upstream.

Our server runs the gemini backend pointed at a ``ScriptedServer`` on loopback that
records the raw body it received. Whatever sent the image (the provider, the
OpenAI-style ``Client``, ``gprochat chat -a``, the ``openai`` SDK on ``/v1``; the page
is in ``web/test_browser_images_upstream.py``), the upstream's ``inline_data.data``
must be the base64 of the file's very bytes, with the right ``mime_type``. The large
image's base64 is longer than one of the slices the backend writes it in
(``backends/_json_body.py``), so a slice lost or repeated on the way would show.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from gprochat import Client, GPROChat
from gprochat.server import BackgroundServer
from gprochat.server.backends import GeminiBackend, OpenAIBackend
from gprochat.typing import Messages

from ..conftest import ServerFactory
from ..image_samples import data_url, jpeg, png
from ..processes import run_cli
from ..scripted import LAST_CHUNK, Fleet, RecordedRequest, Script, ScriptedServer, chunk, head
from .backends.test_gemini import answer as gemini_answer
from .backends.test_openai import answer as openai_answer


def photo(width: int, height: int, seed: int) -> bytes:
    """A real PNG of noise: incompressible, so about ``3 * width * height`` bytes."""

    def block(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    noise = random.Random(seed)
    rows = b"".join(b"\x00" + noise.randbytes(width * 3) for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + block(b"IHDR", header) + block(b"IDAT", zlib.compress(rows, 0))
            + block(b"IEND", b""))


LARGE = photo(320, 240, seed=1)  # 300 KB of base64: more than one 256 KiB slice
SMALL = png(6, 4, seed=2)
OTHER = jpeg(seed=3)


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def answering_as_gemini(*texts: str) -> Script:
    """A Gemini upstream: every request is answered ``texts`` as ``alt=sse`` events."""

    async def script(request: RecordedRequest, writer: asyncio.StreamWriter) -> None:
        writer.write(head(200, {"Content-Type": "text/event-stream"}))
        for event in gemini_answer(*texts):
            writer.write(chunk(event))
        writer.write(LAST_CHUNK)

    return script


def answering_as_openai(*texts: str) -> Script:
    """An OpenAI-compatible upstream streaming ``texts``."""

    async def script(request: RecordedRequest, writer: asyncio.StreamWriter) -> None:
        writer.write(head(200, {"Content-Type": "text/event-stream"}))
        for event in openai_answer(*texts):
            writer.write(chunk(event))
        writer.write(LAST_CHUNK)

    return script


def gemini_turns(request: RecordedRequest) -> list[tuple[str, list[tuple[str, bytes]], str]]:
    """Each turn of the Gemini request: its role, its images as (mime type, the bytes
    their base64 decodes to, strictly) and its text. Each image's base64 text is also
    checked to be in the raw body exactly as it decodes back (no re-encoding on the way)."""
    assert request.path.endswith(":streamGenerateContent?alt=sse")
    turns = []
    for content in json.loads(request.body)["contents"]:
        images, texts = [], []
        for part in content["parts"]:
            if "inline_data" in part:
                assert set(part["inline_data"]) == {"mime_type", "data"}, part
                data = part["inline_data"]["data"]
                raw = base64.b64decode(data, validate=True)
                assert b64(raw) == data and f'"data": "{data}"'.encode() in request.body
                images.append((part["inline_data"]["mime_type"], raw))
            else:
                texts.append(part["text"])
        turns.append((content["role"], images, "".join(texts)))
    return turns


@pytest.fixture
def gemini_server(make_server: ServerFactory) -> Iterator[tuple[BackgroundServer, ScriptedServer]]:
    """Our server (gemini backend) and its scripted upstream, on a loop of its own, so
    synchronous clients and subprocesses can be the ones sending."""
    fleet = Fleet({"gemini": answering_as_gemini("Two ", "pictures.")})
    with fleet.in_thread():
        server = make_server(backend=GeminiBackend(api_key="AIza-test", base_url=fleet.url("gemini")))
        yield server, fleet.servers["gemini"]


async def test_the_providers_images_reach_the_gemini_upstream_byte_identical(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    path = tmp_path / "large.png"
    path.write_bytes(LARGE)
    messages: Messages = [
        {"role": "user", "content": [{"type": "text", "text": "Earlier"},
                                     {"type": "image_url", "image_url": {"url": data_url(SMALL)}}]},
        {"role": "assistant", "content": "A small one."},
        {"role": "user", "content": "And these?"},
    ]
    async with ScriptedServer(answering_as_gemini("Two ", "pictures.")) as upstream:
        server = make_server(backend=GeminiBackend(api_key="AIza-test", base_url=upstream.base_url))
        text = await GPROChat.create_async("", messages, base_url=server.base_url, history="native",
                                           max_retries=0, images=[str(path), OTHER])
    assert text == "Two pictures."
    [request] = upstream.requests
    assert gemini_turns(request) == [
        ("user", [("image/png", SMALL)], "Earlier"),
        ("model", [], "A small one."),
        ("user", [("image/png", LARGE), ("image/jpeg", OTHER)], "And these?"),
    ]


def test_the_clients_image_url_parts_reach_the_gemini_upstream_byte_identical(
    gemini_server: tuple[BackgroundServer, ScriptedServer]
) -> None:
    server, upstream = gemini_server
    messages: Any = [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": data_url(LARGE), "detail": "auto"}},
        {"type": "image_url", "image_url": {"url": data_url(OTHER, "image/jpeg")}},
    ]}]
    with Client(base_url=server.base_url, max_retries=0) as client:
        completion = client.chat.completions.create(model="", messages=messages)
        streamed = "".join(part.choices[0].delta.content or "" for part in
                           client.chat.completions.create(model="", messages=messages, stream=True))
    assert completion.choices[0].message.content == streamed == "Two pictures."
    expected = [("user", [("image/png", LARGE), ("image/jpeg", OTHER)], "What is this?")]
    assert [gemini_turns(request) for request in upstream.requests] == [expected, expected]


def test_chat_attachments_reach_the_gemini_upstream_byte_identical(
    gemini_server: tuple[BackgroundServer, ScriptedServer], tmp_path: Path
) -> None:
    server, upstream = gemini_server
    (tmp_path / "large.png").write_bytes(LARGE)
    (tmp_path / "other.jpg").write_bytes(OTHER)
    result = run_cli("chat", "--base-url", server.base_url, "-a", str(tmp_path / "large.png"),
                     "--attachment", str(tmp_path / "other.jpg"), "What is in this picture?", timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Two pictures."
    [request] = upstream.requests
    assert gemini_turns(request) == [
        ("user", [("image/png", LARGE), ("image/jpeg", OTHER)], "What is in this picture?")]


def test_an_sdk_image_url_part_on_v1_reaches_the_gemini_upstream_byte_identical(
    gemini_server: tuple[BackgroundServer, ScriptedServer]
) -> None:
    server, upstream = gemini_server
    sdk = openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0, timeout=60)
    content: Any = [{"type": "text", "text": "Describe"},
                    {"type": "image_url", "image_url": {"url": data_url(LARGE), "detail": "low"}}]
    completion = sdk.chat.completions.create(model="", messages=[{"role": "user", "content": content}])
    assert completion.choices[0].message.content == "Two pictures."
    [request] = upstream.requests
    assert gemini_turns(request) == [("user", [("image/png", LARGE)], "Describe")]


async def test_a_v1_image_url_part_reaches_the_openai_upstream_as_the_same_data_url(
    make_server: ServerFactory
) -> None:
    """/api/generate to the openai backend: ``backends/test_images.py``; here the gateway."""
    url = data_url(LARGE)
    content: Any = [{"type": "text", "text": "Describe"}, {"type": "image_url", "image_url": {"url": url}}]
    async with ScriptedServer(answering_as_openai("Seen.")) as upstream:
        server = make_server(backend=OpenAIBackend(base_url=upstream.base_url + "/v1", api_key="sk-test",
                                                   model="gpt-4o"))
        sdk = openai.AsyncOpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0,
                                 timeout=60)
        completion = await sdk.chat.completions.create(
            model="", messages=[{"role": "user", "content": content}])
        await sdk.close()
    assert completion.choices[0].message.content == "Seen."
    [request] = upstream.requests
    [message] = request.json()["messages"]
    assert message == {"role": "user", "content": [
        {"type": "text", "text": "Describe"}, {"type": "image_url", "image_url": {"url": url}}]}
    assert base64.b64decode(url.split(",", 1)[1], validate=True) == LARGE
    assert f'"url": "{url}"'.encode() in request.body
