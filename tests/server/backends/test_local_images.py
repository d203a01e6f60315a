"""Images and the local model: refused with a 400 naming --mmproj without a projector;
a projector file is checked before the server starts.

The model is the default one (SmolLM2-135M-Instruct, text only). Without llama-cpp-python
and the model these tests skip, except in CI, where they fail (as test_local.py's do).
"""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from gprochat.images import Image
from gprochat.protocol import DEFAULT_SECRET_KEY, build_generate_request, signing_time
from gprochat.server import BackgroundServer, ServerConfig, create_app
from gprochat.server.backends import Conversation, LocalBackend, Turn
from gprochat.server.backends._gguf import check_model_file, check_projector_file, default_model_path
from gprochat.server.backends._mtmd import image_dimensions

from ...processes import run_cli
from ..helpers import error_message, post
from .test_local import require_local_model


def png(width: int, height: int, rgb: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    """A real PNG of one colour."""
    row = b"\0" + bytes(rgb) * width
    body = zlib.compress(row * height)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def gguf_header(architecture: str, tensors: int = 1) -> bytes:
    """The start of a GGUF file: its header and ``general.architecture`` (all our check reads)."""
    key, value = b"general.architecture", architecture.encode()
    return (b"GGUF" + struct.pack("<IQQ", 3, tensors, 1) + struct.pack("<Q", len(key)) + key
            + struct.pack("<I", 8) + struct.pack("<Q", len(value)) + value)


RED = Image.from_bytes(png(8, 8))


@pytest.fixture(scope="module")
def text_only() -> Iterator[BackgroundServer]:
    require_local_model()
    backend = LocalBackend(parallel=2, queue=2, n_ctx=1024, max_tokens=8)
    server = BackgroundServer(app=create_app(ServerConfig(rate_limit=None), backend=backend)).start()
    yield server
    server.stop()


def generate_body(parts: list[dict[str, object]], history: list[dict[str, object]] | None = None):
    messages = [*(history or []), {"role": "user", "parts": parts}]
    return build_generate_request(messages, timestamp=signing_time(), secret_key=DEFAULT_SECRET_KEY)


def test_an_image_for_a_model_without_a_projector_is_a_400_naming_mmproj(text_only) -> None:
    body = generate_body([RED.inline_part(), {"text": "What colour is this?"}])
    status, _, raw = asyncio.run(post(text_only.base_url, body))
    assert status == 400, raw
    message = error_message(raw)
    assert "cannot see images" in message and "--mmproj" in message
    assert "SmolLM2" in message  # which model


def test_an_image_in_an_earlier_turn_is_refused_too(text_only) -> None:
    history = [{"role": "user", "parts": [RED.inline_part(), {"text": "Look."}]},
               {"role": "model", "parts": [{"text": "I see."}]}]
    status, _, raw = asyncio.run(post(text_only.base_url, generate_body([{"text": "And now?"}], history)))
    assert status == 400, raw
    assert "--mmproj" in error_message(raw)


def test_the_gateway_refuses_an_image_part_for_that_model_with_a_400(text_only) -> None:
    backend = text_only.app.state.backend
    body = {"model": backend.models()[0], "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"}, RED.openai_part()]}]}
    status, _, raw = asyncio.run(post(text_only.base_url, json.dumps(body).encode(), "/v1/chat/completions",
                                      {"Content-Type": "application/json"}))
    assert status == 400, raw
    error = json.loads(raw)["error"]
    if "only text parts" in error["message"]:
        pytest.skip("this gateway takes no image parts yet (the gateway's part of #16)")
    assert "--mmproj" in error["message"] and error["type"] == "invalid_request_error"


def test_the_same_server_still_answers_text(text_only) -> None:
    status, _, raw = asyncio.run(post(text_only.base_url, generate_body([{"text": "Say hi."}])))
    assert status == 200 and raw.strip()


def test_the_refusal_comes_before_the_model_has_loaded() -> None:
    """Whether the model can see is known from its settings: no 503 'loading' first."""
    require_local_model()
    backend = LocalBackend(parallel=1, n_ctx=256)  # never started: still "loading"

    async def first() -> None:
        async for _ in backend.stream(Conversation(message="Hi", history=(Turn("user", "x", (RED,)),))):
            pass

    with pytest.raises(Exception, match="--mmproj") as caught:
        asyncio.run(first())
    assert getattr(caught.value, "status", None) == 400


# -- the projector file ------------------------------------------------------------------


def test_a_missing_or_foreign_projector_file_is_refused_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"does not exist.*--mmproj"):
        check_projector_file(tmp_path / "missing.gguf")
    text = tmp_path / "mmproj.gguf"
    text.write_text("not a projector\n")
    with pytest.raises(ValueError, match="is not a GGUF file"):
        check_projector_file(text)
    llama = tmp_path / "llama.gguf"
    llama.write_bytes(gguf_header("llama"))
    with pytest.raises(ValueError, match="is a 'llama' model, not a multimodal projector"):
        check_projector_file(llama)
    clip = tmp_path / "mmproj-x.gguf"
    clip.write_bytes(gguf_header("clip"))
    assert check_projector_file(clip) == clip.resolve()
    with pytest.raises(ValueError, match=r"is a multimodal projector, not a language model.*--mmproj"):
        check_model_file(clip)


def test_serve_with_a_bad_projector_exits_2_saying_why(tmp_path: Path) -> None:
    require_local_model()
    model = default_model_path()
    assert model is not None
    missing = tmp_path / "missing.gguf"
    for projector, why in ((missing, "does not exist"),
                           (model, "is a 'llama' model, not a multimodal projector")):
        result = run_cli("serve", "--backend", "local", "--mmproj", str(projector))
        assert result.returncode == 2, result.stderr
        assert why in result.stderr and "Traceback" not in result.stderr


def test_serve_help_lists_mmproj_with_the_local_backend() -> None:
    result = run_cli("serve", "--help")
    local = result.stdout[result.stdout.index("Backend local"):result.stdout.index("Backend openai")]
    assert "--mmproj" in local


# -- what llama.cpp is asked to decode ------------------------------------------------------


def test_image_dimensions_are_read_from_the_header() -> None:
    assert image_dimensions(png(7, 3)) == (7, 3)
    assert image_dimensions(b"GIF89a" + struct.pack("<HH", 640, 480) + bytes(8)) == (640, 480)
    # A JPEG: SOI, an APP0 segment, then a baseline start of frame (SOF0).
    jpeg = (b"\xff\xd8" + b"\xff\xe0" + struct.pack(">H", 16) + bytes(14)
            + b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, 300, 400, 3) + bytes(9))
    assert image_dimensions(jpeg) == (400, 300)
    assert image_dimensions(b"\xff\xd8\x00\x00" + bytes(16)) is None


def test_the_base64_of_an_image_is_what_the_model_would_decode() -> None:
    raw = png(2, 2)
    assert Image.from_bytes(raw).decode() == raw
    assert base64.b64decode(Image.from_bytes(raw).data) == raw
