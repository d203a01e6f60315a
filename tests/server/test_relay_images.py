"""Images through the relay backend: our server passes them on to the upstream deployment.

The upstream must receive each image's base64 exactly as the client sent it: a
non-canonical encoding (unused low bits set, which decodes to the same bytes) would
come out canonical if anything on the way decoded and encoded it again.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from gprochat import GPROChat
from gprochat.images import Image
from gprochat.protocol import generate_signature
from gprochat.typing import Messages

from ..conftest import ServerFactory
from ..image_samples import described, jpeg, png
from ..scripted import LAST_CHUNK, RecordedRequest, ScriptedServer, chunk, head

UPSTREAM_SECRET = "upstream-secret"


def non_canonical(raw: bytes) -> str:
    """Base64 of ``raw`` that decodes to ``raw`` but is not what b64encode gives."""
    assert len(raw) % 3 == 2, "one '=' of padding: the last character has 2 unused bits"
    text = base64.b64encode(raw).decode()
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = alphabet[alphabet.index(text[-2]) | 1]
    return text[:-2] + last + "="


def sized(raw: bytes, remainder: int = 2) -> bytes:
    return raw + b"\0" * ((remainder - len(raw)) % 3)


async def test_the_relay_forwards_images_byte_identical(make_server: ServerFactory) -> None:
    bodies: list[dict[str, Any]] = []

    async def upstream(request: RecordedRequest, writer: asyncio.StreamWriter) -> None:
        bodies.append(request.json())
        writer.write(head() + chunk(b"relayed") + LAST_CHUNK)

    earlier, now = sized(png(seed=31)), sized(jpeg(seed=32))
    earlier_b64, now_b64 = non_canonical(earlier), non_canonical(now)
    assert base64.b64decode(now_b64) == now and now_b64 != base64.b64encode(now).decode()
    messages: Messages = [
        {"role": "user", "content": [
            {"type": "text", "text": "Look"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{earlier_b64}"}}]},
        {"role": "assistant", "content": "A picture."},
        {"role": "user", "content": "And this one?"},
    ]
    async with ScriptedServer(upstream) as deployment:
        relay = make_server(relay_url=deployment.base_url, relay_secret_key=UPSTREAM_SECRET)
        text = await GPROChat.create_async(
            "", messages, base_url=relay.base_url, history="native", max_retries=0,
            images=[f"data:image/jpeg;base64,{now_b64}"],
        )
    assert text == "relayed"
    sent = bodies[0]["messages"]
    assert sent == [
        {"role": "user", "parts": [
            {"text": "Look"}, {"inline_data": {"mime_type": "image/png", "data": earlier_b64}}]},
        {"role": "model", "parts": [{"text": "A picture."}]},
        {"role": "user", "parts": [
            {"text": "And this one?"}, {"inline_data": {"mime_type": "image/jpeg", "data": now_b64}}]},
    ]
    # Signed with the upstream's secret, over the text only.
    assert bodies[0]["sign"] == generate_signature(bodies[0]["time"], "And this one?", UPSTREAM_SECRET)


async def test_relay_in_front_of_our_echo_server(make_server: ServerFactory) -> None:
    echo = make_server(secret_key="echo-secret")
    relay = make_server(relay_url=echo.base_url, relay_secret_key="echo-secret")
    first, second = png(seed=33), jpeg(seed=34)
    text = await GPROChat.create_async(
        "", [{"role": "user", "content": "Two pictures"}], base_url=relay.base_url,
        images=[first, Image.from_bytes(second)], max_retries=0,
    )
    assert text.splitlines()[1:] == [
        f"[image 1: {described(first)}]", f"[image 2: {described(second, 'image/jpeg')}]"
    ]
