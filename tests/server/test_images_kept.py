"""Large images on both routes: their base64 stays in the request body's bytes
(``protocol.decode_body_keeping_base64``), and every image is still checked as before.

Each image here is over 64 KiB of base64, the size from which a string is kept in the
body. A good one reaches the echo backend intact (its SHA-256); each bad one is refused
in exactly the words ``Image.from_base64`` uses for the same base64 given as text, with
the same status, on ``/api/generate`` and on ``/v1``.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest

from gprochat.errors import ImageError
from gprochat.images import Image
from gprochat.server import BackgroundServer

from ..conftest import ServerFactory
from .helpers import error_message, post, signed
from .test_gateway import post as post_v1

RAW = b"\x89PNG\r\n\x1a\n" + hashlib.sha256(b"kept").digest() * 3_000  # 96 KB
DATA = base64.b64encode(RAW).decode()
MAX_IMAGE_BYTES = 200_000


@pytest.fixture
def server(make_server: ServerFactory) -> BackgroundServer:
    return make_server(rate_limit=None, max_image_bytes=MAX_IMAGE_BYTES)


def described(raw: bytes, mime: str = "image/png") -> str:
    return f"[image 1: {mime}, {len(raw)} bytes, sha256 {hashlib.sha256(raw).hexdigest()}]"


async def test_a_large_image_reaches_the_backend_intact_on_both_routes(server: BackgroundServer) -> None:
    body = signed("What is this?", images=[{"inline_data": {"mime_type": "image/png", "data": DATA}}])
    status, _, answer = await post(server.base_url, body)
    assert status == 200, answer
    assert answer.decode().endswith(described(RAW))
    status, reply, _ = await post_v1(server, v1_body("data:image/png;base64," + DATA))
    assert status == 200, reply
    assert reply["choices"][0]["message"]["content"].endswith(described(RAW))


async def test_large_base64_as_a_message_is_its_text(server: BackgroundServer) -> None:
    """A long string where no image goes is put back as the text it was (signed as such)."""
    text = DATA[:80_000]  # kept while decoding (over 64 KiB), under the message limit
    status, _, answer = await post(server.base_url, signed(text))
    assert status == 200, answer
    assert text in answer.decode()


def v1_body(url: str) -> dict[str, Any]:
    return {"model": "echo", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": url}}]}]}


BAD = {
    "'=' inside": DATA[:50_000] + "=" + DATA[50_001:],
    "three '='": DATA[:-4] + "A===",
    "length not a multiple of 4": DATA[:-4] + "AAAAA",
    "a space": DATA[:70_000] + " " + DATA[70_001:],
    "a line break": DATA[:70_000] + "\\n" + DATA[70_001:],  # an escape in JSON
    "URL-safe alphabet": DATA[:70_000] + "_" + DATA[70_001:],
    "non-ASCII": DATA[:70_000] + "é" + DATA[70_001:],
    "not an image": base64.b64encode(bytes(100_000)).decode(),
    "SVG": base64.b64encode(b'<svg xmlns="http://www.w3.org/2000/svg">' + b" " * 90_000 + b"</svg>").decode(),
    "over the limit": base64.b64encode(RAW * 3).decode(),
    "declared otherwise": DATA,  # sent as image/jpeg
}


def expected(data: str, where: str, declared: str) -> tuple[int, str]:
    text = json.loads(f'"{data}"')  # as the server reads it
    with pytest.raises(ImageError) as caught:
        Image.from_base64(text, declared, where=where, max_bytes=MAX_IMAGE_BYTES)
    return caught.value.status, caught.value.message


@pytest.mark.parametrize("name", sorted(BAD))
async def test_a_large_bad_image_is_refused_in_the_same_words(server: BackgroundServer, name: str) -> None:
    data = BAD[name]
    declared = "image/jpeg" if name == "declared otherwise" else "image/png"
    image = {"inline_data": {"mime_type": declared, "data": "@@"}}
    body = json.dumps(signed("What is this?", images=[image])).replace('"@@"', f'"{data}"')
    status, _, answer = await post(server.base_url, body.encode())
    want_status, want = expected(data, "messages[0].parts[1]", declared)
    limit = " (--max-image-bytes)" if want_status == 413 else ""
    assert (status, error_message(answer)) == (want_status, want + limit)

    url = f"data:{declared};base64,{data}"
    raw = json.dumps(v1_body("@@")).replace('"@@"', f'"{url}"')
    status, reply, _ = await post_v1(server, raw)
    want_status, want = expected(data, "messages[0].content[1]", declared)
    assert status == want_status, reply
    assert reply["error"]["message"].startswith(want), reply
