"""Images given to the local model through a multimodal projector (``--mmproj``).

The projector is ``synthetic_projector``'s: real llama.cpp format, random weights, 16
tokens an image, for the default SmolLM2 model. It proves that images travel from the
request into the model's sequence, through llama.cpp's own multimodal code, and change
what the model reads; not that the model understands them (no real vision model can be
installed here: docs/images.md says so).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from gprochat.errors import BackendError
from gprochat.images import Image
from gprochat.protocol import DEFAULT_SECRET_KEY, build_generate_request, signing_time
from gprochat.server import BackgroundServer, ServerConfig, create_app
from gprochat.server.backends import AnswerReport, Conversation, LocalBackend, Turn

from ...processes import clean_env, served
from ..helpers import error_message, post
from .synthetic_projector import IMAGE_TOKENS, write_projector
from .test_local import require_local_model
from .test_local_images import png

RED = Image.from_bytes(png(8, 8, (255, 0, 0)))
BLUE = Image.from_bytes(png(80, 40, (0, 0, 255)))
QUESTION = "Describe the picture."


@pytest.fixture(scope="module")
def projector(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_projector(tmp_path_factory.mktemp("mmproj") / "mmproj-test.gguf")


@pytest.fixture(scope="module")
def seeing(projector: Path) -> Iterator[BackgroundServer]:
    require_local_model()
    backend = LocalBackend(parallel=4, queue=4, n_ctx=2048, max_tokens=12, mmproj=str(projector))
    server = BackgroundServer(app=create_app(ServerConfig(rate_limit=None), backend=backend)).start()
    assert backend.wait_ready(120) == "ready", backend.status
    yield server
    server.stop()


def ask(server: BackgroundServer, text: str, *images: Image,
        history: list[dict[str, object]] | None = None) -> tuple[int, bytes]:
    parts = [*(image.inline_part() for image in images), {"text": text}]
    messages = [*(history or []), {"role": "user", "parts": parts}]
    body = build_generate_request(messages, timestamp=signing_time(), secret_key=DEFAULT_SECRET_KEY)
    status, _, raw = asyncio.run(post(server.base_url, body))
    return status, raw


def usage(backend: LocalBackend, conversation: Conversation) -> tuple[str, dict[str, int]]:
    report = AnswerReport()

    async def run() -> str:
        conversation_with = Conversation(message=conversation.message, history=conversation.history,
                                         images=conversation.images, report=report)
        return "".join([text async for text in backend.stream(conversation_with)])

    text = asyncio.run(run())
    assert report.usage is not None
    return text, report.usage


def test_images_reach_the_model_and_change_what_it_reads(seeing: BackgroundServer) -> None:
    answers = {}
    for name, images in (("none", ()), ("red", (RED,)), ("blue", (BLUE,))):
        status, raw = ask(seeing, QUESTION, *images)
        assert status == 200, raw
        answers[name] = raw.decode()
    assert all(answers.values())
    assert len(set(answers.values())) == 3, answers  # each image gave the model other inputs
    status, again = ask(seeing, QUESTION, RED)  # greedy: the same image, the same answer
    assert status == 200 and again.decode() == answers["red"]


def test_each_image_takes_its_tokens_in_the_prompt(seeing: BackgroundServer) -> None:
    backend = seeing.app.state.backend
    counts = [usage(backend, Conversation(message=QUESTION, images=images))[1]["prompt_tokens"]
              for images in ((), (RED,), (RED, BLUE))]
    assert counts[1] - counts[0] >= IMAGE_TOKENS
    assert counts[2] - counts[1] == counts[1] - counts[0]
    # An image of an earlier turn is read too.
    earlier = Conversation(message=QUESTION, history=(Turn("user", "Look.", (BLUE,)), Turn("model", "Yes.")))
    plain = Conversation(message=QUESTION, history=(Turn("user", "Look."), Turn("model", "Yes.")))
    assert (usage(backend, earlier)[1]["prompt_tokens"] - usage(backend, plain)[1]["prompt_tokens"]
            == counts[1] - counts[0])


def test_an_image_conversation_beside_text_ones_leaves_their_answers_alone(seeing: BackgroundServer) -> None:
    """The image prompt is decoded into its own sequence between two steps of the batch."""
    backend = seeing.app.state.backend
    text_alone = usage(backend, Conversation(message="Name the capital of France."))[0]
    image_alone = usage(backend, Conversation(message=QUESTION, images=(RED,)))[0]

    async def together() -> list[str]:
        async def one(conversation: Conversation) -> str:
            return "".join([text async for text in backend.stream(conversation)])

        return await asyncio.gather(one(Conversation(message="Name the capital of France.")),
                                    one(Conversation(message=QUESTION, images=(RED,))),
                                    one(Conversation(message="Name the capital of France.")))

    first, image, second = asyncio.run(together())
    assert first == second == text_alone
    assert image == image_alone


def test_images_llama_cpp_should_not_decode_are_refused_and_the_server_goes_on(
        seeing: BackgroundServer) -> None:
    webp = Image.from_bytes(b"RIFF" + (20).to_bytes(4, "little") + b"WEBPVP8 " + bytes(12))
    status, raw = ask(seeing, QUESTION, webp)
    assert status == 400 and "reads PNG, JPEG and GIF" in error_message(raw)
    huge = Image.from_bytes(png(1, 1)[:16] + (20000).to_bytes(4, "big") * 2 + png(1, 1)[24:])
    status, raw = ask(seeing, QUESTION, huge)
    assert status == 400 and "20000x20000 pixels" in error_message(raw)
    broken = Image.from_bytes(png(4, 4)[:40])  # a PNG cut short: its pixels are missing
    status, raw = ask(seeing, QUESTION, broken)
    assert status == 400 and "could not be decoded" in error_message(raw)
    status, raw = ask(seeing, QUESTION, RED)
    assert status == 200 and raw.strip()


def test_a_projector_that_does_not_fit_the_model_fails_the_load_saying_so(tmp_path: Path) -> None:
    require_local_model()
    wrong = write_projector(tmp_path / "mmproj-wrong.gguf", text_width=512)
    backend = LocalBackend(parallel=1, n_ctx=256, mmproj=str(wrong))
    status = backend.wait_ready(120)
    assert status.startswith("failed:") and "projector" in status, status

    async def first() -> None:
        async for _ in backend.stream(Conversation(message="Hi")):
            pass

    with pytest.raises(BackendError) as caught:
        asyncio.run(first())
    assert caught.value.status == 503


def test_serve_with_mmproj_answers_an_image(projector: Path) -> None:
    require_local_model()
    env = clean_env(GPROCHAT_BACKEND="local", GPROCHAT_MAX_TOKENS="8", GPROCHAT_N_CTX="1024")
    # served() waits for /healthz's 200, which comes once the model and projector are loaded.
    with served("--mmproj", str(projector), "--rate-limit", "off", env=env, timeout=120) as base_url:
        messages = [{"role": "user", "parts": [RED.inline_part(), {"text": QUESTION}]}]
        body = build_generate_request(messages, timestamp=signing_time(), secret_key=DEFAULT_SECRET_KEY)
        status, _, raw = asyncio.run(post(base_url, body))
        assert status == 200, raw
        assert raw.strip()
