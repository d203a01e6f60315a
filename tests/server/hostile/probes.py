"""The hostile suite's vocabulary: server settings, request builders, the ``Probe`` row.

A probe is one named request (or a few pieces of one, with pauses) and the answers it
may get. ``expect`` lists the acceptable statuses; ``CLOSED`` in it means "the server
closes the connection without an answer", which is acceptable only where it is listed.
Whatever the row says, a 5xx, a hang or a traceback in the server's log fails it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from gprochat.protocol import build_generate_request, generate_signature, signing_time

from .rawhttp import Answer, exchange, request

#: Stands for "the connection was closed without a response" in ``Probe.expect``.
CLOSED = 0

SECRET = "hostile-suite-secret"
PASSWORDS = ("pw-one", "pw-two")
API_KEY = "hostile-suite-key"
MAX_BODY = 65_536
MAX_MESSAGES = 20
MAX_CHARS = 4_000
MAX_IMAGE_BYTES = 16_384
MAX_IMAGES = 8
MAX_PARTS = 1024
HEADER_TIMEOUT = 2.0
BODY_IDLE_TIMEOUT = 2.0
BODY_TIMEOUT = 5.0
KEEP_ALIVE_TIMEOUT = 2.0
MAX_URL_BYTES = 4096
MAX_HEADER_COUNT = 50
MAX_HEADER_BYTES = 8192

HOSTILE_ARGS = [
    "--secret-key", SECRET,
    "--password", ",".join(PASSWORDS),
    "--api-key", API_KEY,
    "--rate-limit", "off",
    "--max-body-bytes", str(MAX_BODY),
    "--max-messages", str(MAX_MESSAGES),
    "--max-message-chars", str(MAX_CHARS),
    "--max-image-bytes", str(MAX_IMAGE_BYTES),
    "--max-images", str(MAX_IMAGES),
    "--max-parts", str(MAX_PARTS),
    "--max-streams", "32",
    "--log-level", "info",
]

LIMITED_PASSWORD = "limited-pw"
LIMITED_RATE = 5
LIMITED_ARGS = [
    "--password", LIMITED_PASSWORD,
    "--rate-limit", f"{LIMITED_RATE}/minute",
    "--log-level", "info",
]

TEXT_PLAIN = ("Content-Type", "text/plain;charset=UTF-8")
JSON_TYPE = ("Content-Type", "application/json")
BEARER = ("Authorization", f"Bearer {API_KEY}")


@dataclass(frozen=True)
class Probe:
    """One row of a probe table."""

    name: str
    build: Callable[[], bytes | Sequence[bytes | float]]
    expect: tuple[int, ...]
    # The 4xx body's shape: "protocol" ({"error": {"message"}}), "openai" (its four keys),
    # "any" (the HTTP layer's own refusals, before any route is chosen).
    shape: str = "protocol"
    mentions: tuple[str, ...] = ()  # the 4xx message names one of these (case-insensitive)
    head: bool = False
    answers: int = 1
    check: Callable[[list[Answer]], None] | None = None
    timeout: float = 15.0
    write_first: bool = False

    def __str__(self) -> str:
        return self.name


Build = Callable[[], "bytes | Sequence[bytes | float]"]


def P(name: str, build: Build, *expect: int, **options: Any) -> Probe:
    """A table row: ``P("name", lambda: request bytes, 400, mentions=("time",))``."""
    return Probe(name, build, expect, **options)


async def run(probe: Probe, port: int) -> list[Answer]:
    """Send the probe and judge the answers against its row; returns them for extra checks."""
    answers = await exchange(port, probe.build(), answers=probe.answers, head=probe.head,
                             timeout=probe.timeout, write_first=probe.write_first)
    for answer in answers:
        status = CLOSED if answer.status is None else answer.status
        assert status < 500, f"{probe.name}: server error {answer!r}"
        assert status in probe.expect, f"{probe.name}: expected {probe.expect}, got {answer!r}"
        if 400 <= status < 500 and not probe.head and probe.shape != "any":
            check_error_body(answer, probe.shape, probe.mentions)
    if probe.check is not None:
        probe.check(answers)
    return answers


def check_error_body(answer: Answer, shape: str, mentions: Sequence[str] = ()) -> None:
    """``{"error": {"message": ...}}`` (OpenAI's four keys on ``/v1``), naming the problem."""
    try:
        data = answer.json()
    except ValueError as exc:
        raise AssertionError(f"a {answer.status} whose body is not JSON: {answer!r}") from exc
    assert isinstance(data, dict) and set(data) == {"error"}, f"not the error shape: {data}"
    error = data["error"]
    assert isinstance(error, dict) and isinstance(error.get("message"), str) and error["message"], data
    if shape == "openai":
        assert {"message", "type", "param", "code"} <= set(error), f"not OpenAI's error shape: {data}"
    if mentions:
        message = error["message"].lower()
        assert any(word.lower() in message for word in mentions), (
            f"the message does not name the problem ({' / '.join(mentions)}): {error['message']!r}"
        )


# --- /api/generate bodies -------------------------------------------------------------

def now_ms() -> int:
    return signing_time()


def generate_body(
    text: str = "Hi",
    *,
    history: Sequence[dict[str, Any]] = (),
    password: str | None = PASSWORDS[0],
    timestamp: int | None = None,
    secret: str = SECRET,
) -> dict[str, Any]:
    """A valid, freshly signed ``/api/generate`` body for the hostile server."""
    messages = [*history, {"role": "user", "parts": [{"text": text}]}]
    return build_generate_request(
        messages, timestamp=now_ms() if timestamp is None else timestamp, secret_key=secret,
        password=password,
    )


def with_literal(body: dict[str, Any], path: Sequence[str | int], literal: str) -> bytes:
    """``body`` as JSON with the value at ``path`` replaced by raw JSON text ``literal``."""
    marker = "@@hostile-literal@@"
    target: Any = body
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = marker
    return json.dumps(body).replace(json.dumps(marker), literal).encode()


def post(path: str, body: bytes, *headers: tuple[str, str]) -> bytes:
    return request("POST", path, body, headers=headers or (TEXT_PLAIN,))


def generate(body: dict[str, Any] | bytes | str, *headers: tuple[str, str]) -> bytes:
    if isinstance(body, dict):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode()
    return post("/api/generate", body, *headers)


def chunked(path: str, body: bytes, piece: int = 4096, *headers: tuple[str, str]) -> bytes:
    """``body`` sent with ``Transfer-Encoding: chunked`` (no Content-Length)."""
    framed = b"".join(
        b"%x\r\n%s\r\n" % (len(body[i:i + piece]), body[i:i + piece])
        for i in range(0, len(body), piece)
    ) + b"0\r\n\r\n"
    return request("POST", path, framed, headers=[("Transfer-Encoding", "chunked"), *headers],
                   content_length=False)


def signed_text_with_sign(text: str) -> dict[str, Any]:
    """A body whose signature is right for ``text`` (so only the text is hostile)."""
    body = generate_body("placeholder")
    body["messages"][-1]["parts"][0]["text"] = text
    body["sign"] = generate_signature(body["time"], text, SECRET)
    return body


def padded_body(size: int) -> bytes:
    """A valid signed body of exactly ``size`` bytes (JSON whitespace pads it)."""
    raw = json.dumps(generate_body("padded")).encode()
    assert len(raw) <= size, (len(raw), size)
    return raw[:-1] + b" " * (size - len(raw)) + b"}"


def deep(depth: int, open_: str = "[", close: str = "]") -> str:
    return open_ * depth + close * depth


async def good_generate_answer(port: int) -> Answer:
    [answer] = await exchange(port, generate(generate_body("still there?")))
    return answer


# --- /v1 bodies -----------------------------------------------------------------------

def completion_body(content: Any = "Hi", **params: Any) -> dict[str, Any]:
    return {"model": "echo", "messages": [{"role": "user", "content": content}], **params}


def completions(body: dict[str, Any] | bytes | str, *headers: tuple[str, str]) -> bytes:
    if isinstance(body, dict):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode()
    return post("/v1/chat/completions", body, *(headers or (JSON_TYPE, BEARER)))
