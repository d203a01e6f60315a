"""Hostile image parts against ``POST /api/generate`` (docs/images.md, "Server").

The hostile server takes at most ``MAX_IMAGES`` images of ``MAX_IMAGE_BYTES`` each.
Every row is refused with a 400 or 413 that names the part (``messages[i].parts[j]``)
or the limit, or answered 200 where the input is in fact valid (the echo backend then
describes each image of the new message by type, size and SHA-256); never a 5xx.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from gprochat.protocol import build_generate_request, generate_signature

from .conftest import ServedProcess
from .probes import MAX_BODY, MAX_IMAGE_BYTES, MAX_IMAGES, PASSWORDS, SECRET, P, Probe, generate, now_ms, run
from .rawhttp import Answer

PNG = b"\x89PNG\r\n\x1a\n"
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"
GIF = b"GIF89a"
WEBP = b"RIFF\x24\x00\x00\x00WEBPVP8 "
SVG = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>'


def raster(magic: bytes = PNG, size: int = 64) -> bytes:
    """``size`` bytes behind ``magic`` (the server checks the magic number only)."""
    return (magic + bytes(range(256)) * (size // 256 + 1))[:size]


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def part(raw: bytes | None = None, mime_type: str | None = "image/png", *,
         data: Any = None) -> dict[str, Any]:
    """An image part: ``raw`` bytes as base64, or ``data`` as given (hostile)."""
    inline: dict[str, Any] = {}
    if mime_type is not None:
        inline["mime_type"] = mime_type
    inline["data"] = b64(raw) if raw is not None else data
    return {"inline_data": inline}


def body(text: str = "What is this?", parts: Sequence[dict[str, Any]] = (),
         history: Sequence[dict[str, Any]] = (), signed_text: str | None = None) -> dict[str, Any]:
    """A signed body whose last message is ``text`` then ``parts`` (the signature covers
    ``signed_text`` when given: by default the message's text, as the protocol says)."""
    message = {"role": "user", "parts": ([{"text": text}] if text else []) + list(parts)}
    built = build_generate_request([*history, message], timestamp=now_ms(), secret_key=SECRET,
                                   password=PASSWORDS[0])
    if signed_text is not None:
        built["sign"] = generate_signature(built["time"], signed_text, SECRET)
    return built


def images(*raws: bytes) -> list[dict[str, Any]]:
    return [part(raw, _type(raw)) for raw in raws]


def _type(raw: bytes) -> str:
    return {PNG[:3]: "image/png", JPEG[:3]: "image/jpeg", GIF[:3]: "image/gif",
            WEBP[:3]: "image/webp"}[raw[:3]]


def tiny_images(count: int) -> bytes:
    """``count`` six-byte GIFs in one compact body (under the body limit: only the
    image count can refuse it)."""
    built = body("many", [part(GIF, "image/gif")] * count)
    raw = json.dumps(built, separators=(",", ":")).encode()
    assert len(raw) < MAX_BODY, len(raw)
    return raw


def history_with(*parts: dict[str, Any], role: str = "user") -> list[dict[str, Any]]:
    turn = {"role": role, "parts": [{"text": "earlier"}, *parts]}
    return [turn, {"role": "model" if role == "user" else "user", "parts": [{"text": "ok"}]}] \
        if role == "user" else [{"role": "user", "parts": [{"text": "hi"}]}, turn]


def described(*raws: bytes) -> Callable[[list[Answer]], None]:
    """The echo backend's answer lists exactly these images, in order, by SHA-256."""

    def check(answers: list[Answer]) -> None:
        [answer] = answers
        assert answer.status == 200, answer
        text = answer.body.decode()
        lines = [line for line in text.splitlines() if line.startswith("[image ")]
        assert lines == [
            f"[image {n}: {_type(raw)}, {len(raw)} bytes, sha256 {hashlib.sha256(raw).hexdigest()}]"
            for n, raw in enumerate(raws, 1)
        ], text

    return check


def names(*words: str) -> Callable[[list[Answer]], None]:
    """The refusal's message contains every one of ``words``."""

    def check(answers: list[Answer]) -> None:
        message = answers[0].json()["error"]["message"]
        missing = [word for word in words if word not in message]
        assert not missing, (missing, message)

    return check


AT_LIMIT = raster(PNG, MAX_IMAGE_BYTES)
OVER_LIMIT = raster(PNG, MAX_IMAGE_BYTES + 1)
WHERE = "messages[0].parts[1]"  # the first image part of a one-message body with text

IMAGES = [
    # -- the bytes
    P("not base64 at all", lambda: generate(body(parts=[part(data="not base64!!")])), 400,
      mentions=("base64",), check=names(WHERE)),
    P("base64 with line breaks (MIME style)",
      lambda: generate(body(parts=[part(data=base64.encodebytes(raster(size=200)).decode())])), 400,
      mentions=("base64",)),
    P("base64 without its padding",
      lambda: generate(body(parts=[part(data=b64(raster(size=65)).rstrip("="))])), 400, mentions=("base64",)),
    P("base64url alphabet", lambda: generate(body(parts=[part(data=b64(b"\x89PNG\r\n\x1a\n\xfb\xff" * 9)
                                                                 .replace("+", "-").replace("/", "_"))])),
      400, mentions=("base64",)),
    P("a data URL where the base64 belongs",
      lambda: generate(body(parts=[part(data="data:image/png;base64," + b64(raster()))])), 400,
      mentions=("base64",)),
    P("a lone surrogate in the data", lambda: generate(body(parts=[part(data="iVBO\ud800")])), 400,
      mentions=("surrogate", "unicode")),
    P("an empty image", lambda: generate(body(parts=[part(data="")])), 400, mentions=("empty",),
      check=names(WHERE)),
    P("wrong magic: declared PNG, bytes JPEG",
      lambda: generate(body(parts=[part(raster(JPEG), "image/png")])), 400,
      mentions=("declared",), check=names(WHERE, "image/jpeg")),
    P("wrong magic: declared JPEG, bytes are text",
      lambda: generate(body(parts=[part(b"just some text, renamed photo.jpg", "image/jpeg")])), 400,
      mentions=("text",)),
    P("an SVG, declared as one", lambda: generate(body(parts=[part(SVG, "image/svg+xml")])), 400,
      mentions=("svg",)),
    P("an SVG declared as PNG", lambda: generate(body(parts=[part(SVG, "image/png")])), 400,
      mentions=("svg",)),
    P("HTML declared as GIF", lambda: generate(body(parts=[part(b"<html><script>x</script>", "image/gif")])),
      400, mentions=("markup",)),
    P("random bytes", lambda: generate(body(parts=[part(b"\xfe\x01\xc3\x00" * 30, "image/png")])), 400,
      mentions=("not a png",)),
    # -- the shape of the part
    P("inline_data without mime_type", lambda: generate(body(parts=[part(raster(), None)])), 400,
      mentions=("mime_type",)),
    P("inline_data without data", lambda: generate(body(parts=[{"inline_data": {"mime_type": "image/png"}}])),
      400, mentions=("data",)),
    P("inline_data is a string", lambda: generate(body(parts=[{"inline_data": b64(raster())}])), 400,
      mentions=("inline_data",)),
    P("data is a number", lambda: generate(body(parts=[part(data=12345)])), 400, mentions=("data",)),
    P("mime_type is a list", lambda: generate(body(parts=[part(raster(), ["image/png"])])), 400,  # type: ignore[arg-type]
      mentions=("mime_type",)),
    P("mime_type of 10,000 characters",
      lambda: generate(body(parts=[part(raster(), "image/" + "x" * 10_000)])), 400, mentions=("mime_type",)),
    P("a part with both text and inline_data",
      lambda: generate(body(parts=[{"text": "x", **part(raster())}])), 400, mentions=("either",)),
    P("Gemini's camelCase inlineData (not this protocol's spelling)",
      lambda: generate(body(parts=[{"inlineData": {"mimeType": "image/png", "data": b64(raster())}}])), 400,
      mentions=("inline_data",)),
    P("an image in a model turn", lambda: generate(body(history=history_with(part(raster()), role="model"))),
      400, mentions=("model",), check=names("messages[1].parts[1]", "user")),
    # -- limits
    P(f"an image of exactly {MAX_IMAGE_BYTES} bytes", lambda: generate(body(parts=images(AT_LIMIT))), 200,
      check=described(AT_LIMIT)),
    P(f"an image of {MAX_IMAGE_BYTES + 1} bytes", lambda: generate(body(parts=images(OVER_LIMIT))), 413,
      mentions=("limit",), check=names(WHERE, str(MAX_IMAGE_BYTES), "--max-image-bytes")),
    P(f"exactly {MAX_IMAGES} images", lambda: generate(body(parts=images(*[raster(GIF, 10 + n)
                                                                           for n in range(MAX_IMAGES)]))),
      200, check=described(*[raster(GIF, 10 + n) for n in range(MAX_IMAGES)])),
    P(f"{MAX_IMAGES + 1} images, one of them in the history",
      lambda: generate(body(parts=images(*[raster(GIF)] * MAX_IMAGES), history=history_with(part(raster())))),
      413, mentions=("images",), check=names(f"at most {MAX_IMAGES}", "--max-images")),
    P("1,000 tiny images", lambda: generate(tiny_images(1000)), 413, mentions=("images",),
      check=names("Too many images: 1000", "--max-images")),
    P("an image larger than the whole body limit",
      lambda: generate(body(parts=images(raster(PNG, MAX_BODY)))), 413, mentions=("too large",)),
    # -- valid, if unusual
    P("an image and no text: signed over the empty text", lambda: generate(body("", images(raster()))), 200,
      check=described(raster())),
    P("an image and no text, signed over other text",
      lambda: generate(body("", images(raster()), signed_text="Hi")), 401, mentions=("signature",)),
    P("the image before the text", lambda: generate(_image_first()), 200, check=described(raster(JPEG))),
    P("every accepted type", lambda: generate(body(parts=images(raster(PNG), raster(JPEG), raster(GIF),
                                                                 raster(WEBP)))),
      200, check=described(raster(PNG), raster(JPEG), raster(GIF), raster(WEBP))),
    P("declared image/jpg and IMAGE/PNG", lambda: generate(body(parts=[part(raster(JPEG), "image/jpg"),
                                                                       part(raster(), "IMAGE/PNG")])),
      200, check=described(raster(JPEG), raster())),
    P("images in the history", lambda: generate(body("And this?", images(raster(GIF)),
                                                     history=history_with(part(raster(), "image/png")))),
      200, check=described(raster(GIF))),
    P("a bad image in the history is named",
      lambda: generate(body(history=history_with(part(SVG, "image/png")))), 400, mentions=("svg",),
      check=names("messages[0].parts[1]")),
]


def _image_first() -> dict[str, Any]:
    built = body("")
    built["messages"][-1]["parts"] = [part(raster(JPEG), "image/jpeg"), {"text": "What is this?"}]
    built["sign"] = generate_signature(built["time"], "What is this?", SECRET)
    return built


@pytest.mark.parametrize("probe", IMAGES, ids=str)
async def test_generate_images(probe: Probe, server: ServedProcess) -> None:
    await run(probe, server.port)
