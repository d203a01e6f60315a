"""Images through our server to the upstreams: signed ``/api/generate`` requests with
``inline_data`` parts, received by scripted Gemini and OpenAI upstreams on loopback.

The bytes must arrive exactly as sent: the base64 text the upstream receives is the
one the client sent (never decoded and encoded again), and its SHA-256 is the raw
image's. A backend that cannot see images refuses them with a 400, and the router
answers from a deployment that can.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any

from gprochat.server.backends import Backend, Conversation, EchoBackend, GeminiBackend, OpenAIBackend
from gprochat.server.backends._router_health import MemoryHealth
from gprochat.server.backends.router import Deployment, RoutedModel, RouterBackend

from ...conftest import ServerFactory
from ..helpers import error_message, image_part, png, post, signed
from .test_gemini import answer as gemini_answer
from .test_openai import answer as openai_answer

PHOTO = png(50_000, seed=1)
OTHER = png(3_000, seed=2)
GIF = b"GIF89a" + bytes(40)
HISTORY = [
    {"role": "user", "parts": [{"text": "Look at this"}, image_part(OTHER)]},
    {"role": "model", "parts": [{"text": "A picture."}]},
]


def sha256(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def inline(part: dict[str, Any]) -> tuple[str, str]:
    """An upstream's inline_data part as (mime type, base64)."""
    return part["inline_data"]["mime_type"], part["inline_data"]["data"]


async def test_gemini_upstream_receives_inline_data_byte_identical(
    upstream, make_server: ServerFactory
) -> None:
    upstream.respond_events(gemini_answer("Two ", "pictures."))
    server = make_server(backend=GeminiBackend(api_key="AIza-test", base_url=upstream.url))
    body = signed("What differs?", history=HISTORY,
                  images=[image_part(PHOTO), image_part(GIF, "image/gif")])
    status, _, answer = await post(server.base_url, body)
    assert status == 200 and answer == b"Two pictures."

    [request] = upstream.requests
    history_turn, model_turn, new_turn = request.json["contents"]
    # Google advises the image before the text: each turn's images, then its text.
    assert [inline(p) for p in new_turn["parts"][:2]] == [
        ("image/png", body["messages"][-1]["parts"][1]["inline_data"]["data"]),
        ("image/gif", body["messages"][-1]["parts"][2]["inline_data"]["data"]),
    ]
    assert new_turn["parts"][2] == {"text": "What differs?"}
    sent = inline(new_turn["parts"][0])[1]
    assert sent == base64.b64encode(PHOTO).decode()
    assert sha256(base64.b64decode(sent, validate=True)) == sha256(PHOTO)
    # History turns carry their images too.
    assert history_turn["role"] == "user"
    assert inline(history_turn["parts"][0]) == ("image/png", base64.b64encode(OTHER).decode())
    assert history_turn["parts"][1] == {"text": "Look at this"}
    assert model_turn == {"role": "model", "parts": [{"text": "A picture."}]}


async def test_an_image_alone_is_signed_over_empty_text_and_sent_without_a_text_part(
    upstream, make_server: ServerFactory
) -> None:
    upstream.respond_events(gemini_answer("A cat."))
    server = make_server(backend=GeminiBackend(api_key="AIza-test", base_url=upstream.url))
    body = signed("", images=[image_part(PHOTO)])
    assert body["messages"][-1]["parts"] == [image_part(PHOTO)]  # no text part at all
    status, _, answer = await post(server.base_url, body)
    assert status == 200 and answer == b"A cat."
    [request] = upstream.requests
    assert request.json["contents"] == [{"role": "user", "parts": [image_part(PHOTO)]}]


async def test_openai_upstream_receives_image_url_parts_with_data_urls(
    upstream, make_server: ServerFactory
) -> None:
    upstream.respond_events(openai_answer("Seen."))
    backend = OpenAIBackend(base_url=upstream.url + "/v1", api_key="sk-test", model="gpt-4o")
    server = make_server(backend=backend)
    body = signed("What is this?", history=HISTORY, images=[image_part(PHOTO)])
    status, _, answer = await post(server.base_url, body)
    assert status == 200 and answer == b"Seen."

    [request] = upstream.requests
    first, second, last = request.json["messages"]
    assert last == {"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url",
         "image_url": {"url": "data:image/png;base64," + base64.b64encode(PHOTO).decode()}},
    ]}
    url = last["content"][1]["image_url"]["url"]
    assert sha256(base64.b64decode(url.split(",", 1)[1], validate=True)) == sha256(PHOTO)
    assert first["content"][1]["image_url"]["url"].endswith(base64.b64encode(OTHER).decode())
    assert second == {"role": "assistant", "content": "A picture."}
    # A text-only message keeps the plain string content every OpenAI-compatible API takes.
    upstream.respond_events(openai_answer("Plain."))
    status, _, _ = await post(server.base_url, signed("Just text"))
    assert status == 200 and upstream.requests[-1].json["messages"][-1]["content"] == "Just text"


class TextOnlyBackend(Backend):
    """A backend whose model cannot see images (the base class's default)."""

    name = "textonly"

    def __init__(self) -> None:
        self.asked = 0

    async def stream(self, conversation: Conversation) -> AsyncIterator[str]:
        self.asked += 1
        yield f"text only: {conversation.message}"


async def test_a_backend_that_cannot_see_images_refuses_them_with_400(
    make_server: ServerFactory
) -> None:
    backend = TextOnlyBackend()
    server = make_server(backend=backend)
    for body in (signed("What is this?", images=[image_part(PHOTO)]),
                 signed("And now?", history=HISTORY)):  # an image in the history only
        status, _, raw = await post(server.base_url, body)
        assert status == 400
        assert "cannot see images" in error_message(raw) and "textonly" in error_message(raw)
    assert backend.asked == 0
    status, _, raw = await post(server.base_url, signed("Hi"))
    assert status == 200 and raw == b"text only: Hi" and backend.asked == 1


def _router(*deployments: tuple[str, Backend]) -> RouterBackend:
    return RouterBackend(
        [RoutedModel("vision", [Deployment(name, backend.name, [("key #1", backend)])
                                for name, backend in deployments])],
        health=MemoryHealth(cooldown=60, max_cooldown=300))


async def test_the_router_carries_images_unchanged_to_a_deployment_that_sees_them(
    upstream, make_server: ServerFactory
) -> None:
    upstream.respond_events(gemini_answer("Routed."))
    blind = TextOnlyBackend()
    gemini = GeminiBackend(api_key="AIza-test", base_url=upstream.url)
    server = make_server(backend=_router(("vision/blind", blind), ("vision/gemini", gemini)))
    body = signed("Describe", history=HISTORY, images=[image_part(PHOTO)])
    status, _, answer = await post(server.base_url, body)
    assert status == 200 and answer == b"Routed."
    assert blind.asked == 0  # skipped: it cannot see them (not a failure, no cool-down)
    [request] = upstream.requests
    new_turn = request.json["contents"][-1]
    assert inline(new_turn["parts"][0]) == ("image/png", base64.b64encode(PHOTO).decode())
    assert inline(request.json["contents"][0]["parts"][0])[1] == base64.b64encode(OTHER).decode()
    # Text goes to the first deployment, as before.
    status, _, answer = await post(server.base_url, signed("Hi"))
    assert status == 200 and answer == b"text only: Hi" and blind.asked == 1


async def test_the_router_refuses_images_when_no_deployment_sees_them(
    make_server: ServerFactory
) -> None:
    blind = TextOnlyBackend()
    server = make_server(backend=_router(("vision/blind", blind)))
    status, _, raw = await post(server.base_url, signed("Describe", images=[image_part(PHOTO)]))
    assert status == 400
    message = error_message(raw)
    assert "'vision' cannot see images" in message and "vision/blind (textonly)" in message
    assert blind.asked == 0


async def test_the_echo_backend_describes_the_images_it_received(make_server: ServerFactory) -> None:
    server = make_server(backend=EchoBackend())
    status, _, raw = await post(server.base_url, signed("", images=[image_part(PHOTO)]))
    assert status == 200
    assert raw.decode().endswith(f"\n[image 1: image/png, {len(PHOTO)} bytes, sha256 {sha256(PHOTO)}]")


async def test_the_body_sent_is_request_body_even_with_a_text_that_looks_like_a_placeholder(
    upstream, closing
) -> None:
    """The base64 is written in slices after the rest of the JSON (``_json_body``): what
    arrives must still be exactly ``request_body``, whatever the texts hold."""
    from gprochat.images import Image
    from gprochat.server.backends import Turn

    upstream.respond_events(gemini_answer("ok"))
    backend = closing(GeminiBackend(api_key="AIza-test", base_url=upstream.url))
    tricky = 'gprochat-spliced-0000000000000000-0 "quoted" \\ Grüße \u2028'
    conversation = Conversation(
        message=tricky, images=(Image.from_bytes(PHOTO), Image.from_bytes(GIF)),
        history=(Turn("user", tricky, (Image.from_bytes(OTHER),)), Turn("model", "seen")),
        system=tricky)
    assert [text async for text in backend.stream(conversation)] == ["ok"]
    [request] = upstream.requests
    assert request.json == backend.request_body(conversation)
    assert request.json["contents"][-1]["parts"][-1] == {"text": tricky}
    assert int(request.headers["Content-Length"]) == len(
        json.dumps(backend.request_body(conversation)).encode())


def test_protocol_md_image_example_and_empty_text_signature_are_what_the_code_computes() -> None:
    import re
    from pathlib import Path

    from gprochat.protocol import DEFAULT_SECRET_KEY, build_generate_request, generate_signature

    text = (Path(__file__).parents[3] / "docs" / "protocol.md").read_text()
    section = text[text.index("## Images"):]
    start = section.index('{"messages"')
    example = json.loads(section[start:section.index("\n```", start)])
    assert build_generate_request(example["messages"], timestamp=example["time"],
                                  secret_key=DEFAULT_SECRET_KEY) == example
    [empty] = re.findall(r"signed over the empty text \(for the time\s+above and gprochat.com's key:\s+"
                         r"`([0-9a-f]{64})`", section)
    assert empty == generate_signature(example["time"], "", DEFAULT_SECRET_KEY)


async def test_a_large_image_checked_in_a_thread_arrives_intact_or_is_refused(
    make_server: ServerFactory
) -> None:
    large = png(1_500_000, seed=3)  # 2 MB of base64: over the threshold for a thread
    server = make_server(backend=EchoBackend())
    status, _, raw = await post(server.base_url, signed("Big", images=[image_part(large)]))
    assert status == 200
    assert raw.decode().endswith(f"[image 1: image/png, {len(large)} bytes, sha256 {sha256(large)}]")
    status, _, raw = await post(server.base_url, signed("Big", images=[image_part(large, "image/gif")]))
    assert status == 400 and "declared 'image/gif' but its bytes are image/png" in error_message(raw)
