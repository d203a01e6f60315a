"""The GPROChat wire contract, shared by the client and the server.

Nothing else in the package knows how a request is signed, what a request body looks
like, or how an error body is written. docs/protocol.md describes it in prose::

    POST {base}/api/generate
    {"messages": [{"role": "user", "parts": [{"text": "Hi"}]}],
     "time": 1693631200000, "pass": null,
     "sign": sha256_hex(f"{time}:{last message text}:{secret}")}

The answer is ``text/plain; charset=utf-8``, streamed with no framing; errors are
``{"error": {"message": ..., "code"?: ...}}`` whatever their content type.
"""

from __future__ import annotations

import datetime
import email.utils
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, Optional

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)

from .errors import ImageError, ProtocolError
from .images import Base64Run, Image, base64_run

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_SECRET_KEY",
    "GENERATE_PATH",
    "AUTH_PATH",
    "MODELS_PATH",
    "INVALID_HISTORY",
    "INVALID_PASSWORD",
    "INVALID_SIGNATURE",
    "MAX_MODEL_NAME_CHARS",
    "InlineData",
    "Part",
    "WireMessage",
    "GenerateRequest",
    "InvalidRequest",
    "generate_signature",
    "signing_time",
    "verify_signature",
    "build_generate_request",
    "native_messages",
    "message_content",
    "generate_body_json",
    "parse_generate_request",
    "parse_json",
    "decode_body",
    "decode_body_keeping_base64",
    "GENERATE_IMAGE_PATH",
    "error_body",
    "parse_error_body",
    "password_matches",
    "parse_retry_after",
]

DEFAULT_BASE_URL = "https://gprochat.com"
DEFAULT_SECRET_KEY = "2BC120D4-BB36-1B60-26DE-DB630472A3D8"
GENERATE_PATH = "/api/generate"
AUTH_PATH = "/api/auth"
MODELS_PATH = "/api/models"  # gprochat's extension: the models a request may name

INVALID_HISTORY = "Invalid message history: The last message must be from user role."
INVALID_PASSWORD = "Invalid password."
INVALID_SIGNATURE = "Invalid signature."

#: The longest ``model`` name a request may carry (gprochat's extension to the body).
MAX_MODEL_NAME_CHARS = 200


class InlineData(BaseModel):
    """An image inside a message, as Gemini carries it: a MIME type and base64 bytes."""

    model_config = ConfigDict(extra="ignore")

    mime_type: StrictStr = Field(max_length=100)
    data: StrictStr


class Part(BaseModel):
    """One part of a message: ``{"text": ...}`` or ``{"inline_data": {...}}`` (an image).

    The server checks an image's bytes (``gprochat.images.Image.from_base64``); this
    model only checks the shape.
    """

    model_config = ConfigDict(extra="ignore")

    text: Optional[StrictStr] = None
    inline_data: Optional[InlineData] = None

    @model_validator(mode="after")
    def _one_kind(self) -> Part:
        if (self.text is None) == (self.inline_data is None):
            raise ValueError('a part holds either "text" or "inline_data" (an image)')
        return self


class WireMessage(BaseModel):
    """One turn as Gemini names it: ``{"role": "user"|"model", "parts": [{"text": ...}]}``."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["user", "model"]
    parts: list[Part]

    @property
    def text(self) -> str:
        """The parts' texts joined with no separator, as the signature covers them."""
        return "".join(part.text for part in self.parts if part.text is not None)

    @property
    def images(self) -> list[InlineData]:
        """The message's image parts, in order (unchecked: the guard checks the bytes)."""
        return [part.inline_data for part in self.parts if part.inline_data is not None]


class GenerateRequest(BaseModel):
    """The body of ``POST /api/generate``.

    ``model`` is gprochat's extension (GeminiProChat's clients never send it, and its
    servers ignore it): the name of one of the server's models (``GET /api/models``);
    absent or ``""``, the server's default. ``temperature`` is another (a number from
    0 to 2; absent, the backend's default). The signature covers neither.
    """

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    messages: list[WireMessage] = Field(min_length=1)
    time: StrictInt
    password: Optional[StrictStr] = Field(default=None, alias="pass")
    sign: StrictStr
    model: Optional[StrictStr] = Field(default=None, max_length=MAX_MODEL_NAME_CHARS)
    temperature: Optional[float] = Field(default=None, ge=0, le=2, strict=True, allow_inf_nan=False)

    @property
    def history(self) -> list[WireMessage]:
        """Every message but the last."""
        return self.messages[:-1]

    @property
    def text(self) -> str:
        """The new user message's text, the one the signature covers."""
        return self.messages[-1].text


class InvalidRequest(ProtocolError):
    """A request body the server must refuse with 400; ``field`` names the culprit."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


def generate_signature(timestamp: int, message: str, secret_key: str = DEFAULT_SECRET_KEY) -> str:
    """``sha256_hex(f"{timestamp}:{message}:{secret_key}")`` over UTF-8.

    >>> generate_signature(1693631200000, "Hello, world!")[:8]
    '1973b490'
    """
    return hashlib.sha256(f"{timestamp}:{message}:{secret_key}".encode()).hexdigest()


_last_signing_time = 0
_signing_lock = threading.Lock()


def signing_time() -> int:
    """The current time in milliseconds, later than any value returned before in this process.

    A signature covers the time and the last message, so two requests with the same
    text signed in the same millisecond would carry the same signature, and a server
    that accepts each signature once (ours) refuses the second. Stepping one
    millisecond past the previous value keeps every request from one process distinct.
    """
    global _last_signing_time
    with _signing_lock:
        now = int(time.time() * 1000)
        # Ahead of the clock by at most a minute (a burst of requests); when the clock is
        # set back further, follow it rather than sign ever further into the future.
        ahead = _last_signing_time + 1
        _last_signing_time = ahead if now < ahead <= now + 60_000 else now
        return _last_signing_time


def verify_signature(request: GenerateRequest, secret_key: str) -> bool:
    """Check ``request.sign`` in constant time."""
    expected = generate_signature(request.time, request.text, secret_key)
    return hmac.compare_digest(expected.encode(), request.sign.lower().encode("utf-8", "replace"))


def password_matches(given: str | None, passwords: Iterable[str]) -> bool:
    """True when ``given`` equals one of ``passwords``; every comparison is constant-time."""
    candidate = (given or "").encode()
    matched = False
    for password in passwords:
        # No early exit: the time taken does not say which password came close.
        matched |= hmac.compare_digest(candidate, password.encode())
    return matched


def build_generate_request(
    messages: Sequence[dict[str, Any]],
    *,
    timestamp: int,
    secret_key: str,
    password: str | None = None,
) -> dict[str, Any]:
    """A signed request body from wire messages (``{"role", "parts"}`` dicts)."""
    if not messages or messages[-1].get("role") != "user":
        raise ProtocolError(INVALID_HISTORY)
    text = "".join(part["text"] for part in messages[-1]["parts"] if "text" in part)
    return {
        "messages": list(messages),
        "time": timestamp,
        "pass": password,
        "sign": generate_signature(timestamp, text, secret_key),
    }


_WIRE_ROLES = {"user": "user", "assistant": "model", "model": "model"}


def native_messages(
    messages: Sequence[dict[str, Any]], max_history: int | None = None
) -> list[dict[str, Any]]:
    """Chat messages (``{"role", "content"}``) as the web app's ``user``/``model`` turns.

    ``assistant`` becomes ``model``; consecutive messages of one role are merged
    (joined by a blank line); at most ``max_history`` turns are kept before the last
    one, starting with a ``user`` turn; system messages go in front of the first user
    turn that remains, so a cap never drops the instructions.

    A message's content may be OpenAI's content parts: ``text`` parts, and
    ``image_url`` parts whose URL is a ``data:`` URL (or a ``gprochat.images.Image``).
    Each image is checked (``ImageError`` names the part) and becomes an
    ``inline_data`` part after the turn's text, its base64 unchanged.

    >>> native_messages([{"role": "system", "content": "Be brief."},
    ...                  {"role": "user", "content": "Hi"}])
    [{'role': 'user', 'parts': [{'text': 'Be brief.\\n\\nHi'}]}]
    """
    if max_history is not None and max_history < 0:
        raise ProtocolError(f"max_history must be 0 or more, not {max_history}")
    system: list[str] = []
    # Per turn: its wire role, its texts, its images (inline_data parts, in order).
    turns: list[tuple[str, list[str], list[dict[str, Any]]]] = []
    for index, message in enumerate(messages):
        role = message.get("role")
        text, images = message_content(message.get("content"), index)
        if role == "system":
            if images:
                raise ProtocolError(
                    f"messages[{index}] is a system message with an image: "
                    "attach images to a user message"
                )
            system.append(text)
            continue
        if role not in _WIRE_ROLES:
            raise ProtocolError(
                f"messages[{index}] has role {role!r}: use 'system', 'user' or 'assistant'"
            )
        wire_role = _WIRE_ROLES[role]
        if turns and turns[-1][0] == wire_role:
            turns[-1][1].append(text)
            turns[-1][2].extend(images)
        else:
            turns.append((wire_role, [text], images))
    if not turns or turns[-1][0] != "user":
        last = turns[-1][0] if turns else "system"
        raise ProtocolError(
            f"The conversation must end with a user message (the last one is {last!r}): "
            "add the user's new message at the end"
        )
    if max_history is not None:
        history = turns[:-1][-max_history:] if max_history else []
        while history and history[0][0] != "user":
            history.pop(0)  # Gemini wants the history to open with a user turn
        turns = [*history, turns[-1]]
    if system:
        first_user = next(i for i, (role, _, _) in enumerate(turns) if role == "user")
        turns[first_user][1][:0] = system
    return [
        {"role": role, "parts": _turn_parts("\n\n".join(texts), images)}
        for role, texts, images in turns
    ]


def _turn_parts(text: str, images: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # An image-only turn has no empty text part; a text-only turn always has its text.
    return [{"text": text}, *images] if text or not images else list(images)


def message_content(content: Any, index: int) -> tuple[str, list[dict[str, Any]]]:
    """``messages[index]``'s content: its text, and its images as ``inline_data`` parts.

    ``content`` is a string or OpenAI content parts (see ``native_messages``).
    """
    if isinstance(content, str):
        return content, []
    if isinstance(content, list):
        texts: list[str] = []
        images: list[dict[str, Any]] = []
        for number, part in enumerate(content):
            where = f"messages[{index}].content[{number}]"
            image = _content_image(part, where)
            if image is not None:
                images.append(image.inline_part())
            elif isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            else:
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise ProtocolError(
                    f"messages[{index}] has a {kind!r} content part: GPROChat takes text "
                    "and image_url parts only"
                )
        return "".join(texts), images
    raise ProtocolError(
        f"messages[{index}] content must be a string, not {type(content).__name__}"
    )


def _content_image(part: Any, where: str) -> Optional[Image]:
    """The image an OpenAI content part carries, checked; None for any other part."""
    if isinstance(part, Image):
        return part
    if not isinstance(part, dict) or part.get("type") != "image_url":
        return None
    value = part.get("image_url")
    url = value.get("url") if isinstance(value, dict) else value
    if not isinstance(url, str) or not url:
        raise ImageError(
            f"{where} is an image_url part without a URL: "
            "give {'image_url': {'url': 'data:image/png;base64,...'}}",
            where=where,
        )
    if url[:5].lower() == "data:":  # the scheme is case-insensitive (RFC 3986)
        return Image.from_data_url(url, where=where)
    shown = url if len(url) <= 80 else url[:77] + "..."
    raise ImageError(
        f"{where} is a remote URL ({shown}): the GPROChat provider sends only data URLs, "
        "bytes or files; download the image and pass its bytes or path (images=[...]) "
        "or a data:image/...;base64 URL",
        where=where,
    )


_MAX_INT_DIGITS = 100


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > _MAX_INT_DIGITS:
        raise InvalidRequest(
            f"Request body has an integer of {len(text)} digits; no field takes more than "
            f"{_MAX_INT_DIGITS}."
        )
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if value in (_INF, -_INF):
        raise InvalidRequest(f"Request body has the number {text[:40]}, too large for any field.")
    return value


def _refuse_constant(name: str) -> Any:
    raise InvalidRequest(f"Request body has {name}, which is not JSON: send numbers only.")


_INF = float("inf")
# One decoder for every request: json.loads with hooks would build a new one per call.
_DECODER = json.JSONDecoder(
    parse_int=_parse_int, parse_float=_parse_float, parse_constant=_refuse_constant
)


def decode_body(body: bytes) -> str:
    """A request body's text (UTF-8, or the UTF-16/32 JSON allows), or ``InvalidRequest``.

    A server that parses ``decode_body(body)`` after letting go of ``body`` holds a
    large body twice at most while parsing it, not three times (docs/benchmarks.md, B8).
    """
    try:
        return body.decode(json.detect_encoding(body))
    except UnicodeDecodeError as exc:
        raise InvalidRequest(f"Request body is not UTF-8: {exc.reason}.") from exc


# Strings at least this long are looked at by decode_body_keeping_base64 (a 48 KiB image).
_KEEP_CHARS = 64 * 1024
# The quotes and backslashes decode_body_keeping_base64 steps over before giving up (a
# body of many small strings is then decoded whole, as any body is).
_LEXER_STEPS = 50_000

#: Where an image's base64 is in an ``/api/generate`` body (``int``: any list index).
GENERATE_IMAGE_PATH: tuple[str | type[int], ...] = ("messages", int, "parts", int, "inline_data", "data")


def decode_body_keeping_base64(body: bytes) -> tuple[str, dict[str, Base64Run]]:
    """``decode_body(body)``, except that each large base64 string stays in ``body``.

    Each JSON string of at least 64 KiB without escapes that is base64, or a data URL
    of base64 (``images.base64_run``, which checks the alphabet), is replaced in the
    text by a short placeholder (its data URL prefix, then a token with a random
    nonce); the second value maps each placeholder to its ``Base64Run``. Parse the text
    with ``parse_json(text, kept, images_at=...)``: the runs where images go stay
    placeholders (the route builds each ``Image`` from its run), any other is put back
    as the text it was. So a 5 MiB image is neither decoded to text, nor copied by the
    JSON parser, nor encoded again on its way upstream (docs/benchmarks.md, B8).

    Nothing kept (a small body, no such string, UTF-16/32, more than 50,000 strings and
    escapes before the end): the text is ``decode_body(body)``, and so is any error.
    """
    if len(body) < _KEEP_CHARS or json.detect_encoding(body) != "utf-8":
        return decode_body(body), {}
    runs = [run for start, end in _long_strings(body) if (run := base64_run(body, start, end))]
    if not runs:
        return decode_body(body), {}
    nonce = secrets.token_hex(8)
    pieces: list[bytes] = []
    kept: dict[str, Base64Run] = {}
    done = 0
    for index, run in enumerate(runs):
        placeholder = f"{run.prefix}gprochat-kept-{nonce}-{index}"
        kept[placeholder] = run
        pieces += (body[done : run.start], placeholder.encode("ascii"))
        done = run.end
    pieces.append(body[done:])
    try:
        return b"".join(pieces).decode("utf-8"), kept
    except UnicodeDecodeError:
        return decode_body(body), {}  # raises InvalidRequest naming the error


def _long_strings(body: bytes) -> list[tuple[int, int]]:
    """Where each JSON string of ``body`` at least ``_KEEP_CHARS`` long, with no escape, is.

    Reads only quotes and backslashes (``bytes.find``), as a JSON parser reads strings;
    a body that is not JSON gives spans the parser refuses anyway. Gives up (no span)
    after ``_LEXER_STEPS`` steps.
    """
    spans: list[tuple[int, int]] = []
    find, size = body.find, len(body)
    backslash = -1  # the next backslash at or after where the scan is (size: none)
    position = steps = 0
    while (opening := find(b'"', position)) >= 0:
        at, escaped = opening + 1, False
        while True:
            steps += 1
            if steps > _LEXER_STEPS:
                return []
            closing = find(b'"', at)
            if closing < 0:
                return spans  # an unterminated string: the parser names it
            if backslash < at:
                backslash = find(b"\\", at)
                if backslash < 0:
                    backslash = size
            if backslash > closing:
                break
            escaped, at = True, backslash + 2  # the escaped character, whatever it is
        if not escaped and closing - opening - 1 >= _KEEP_CHARS:
            spans.append((opening + 1, closing))
        position = closing + 1
    return spans


def parse_json(
    body: bytes | str,
    kept: Mapping[str, Base64Run] | None = None,
    *,
    images_at: tuple[str | type[int], ...] = (),
    data_urls: bool = False,
) -> Any:
    """A request body's JSON, or ``InvalidRequest`` saying what is wrong with it.

    Stricter than ``json.loads`` where a server must be: no ``NaN``/``Infinity``, no
    number too large for a float, no integer longer than 100 digits, no nesting deeper
    than Python's recursion limit, and no lone UTF-16 surrogate (``"\\ud800"``): none
    of them can be a real request, and each would otherwise fail later, unnamed.
    ``body`` is the bytes received, or their text (``decode_body``), or
    ``decode_body_keeping_base64``'s text with its ``kept`` runs: a run's placeholder
    stays at ``images_at`` (a path of keys, ``int`` for any list index) when it has
    the shape an image has there (a data URL when ``data_urls``, bare base64 if not);
    every other run is put back as its text. The result is ``parse_json`` of the
    original body, placeholders aside; so are its errors.
    """
    text = body if isinstance(body, str) else decode_body(body)
    try:
        data = _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        if kept:  # the error, and its position, as in the body itself
            return parse_json(decode_body(next(iter(kept.values())).buffer))
        raise InvalidRequest(f"Request body is not valid JSON: {exc.msg} at position {exc.pos}.") from exc
    except RecursionError as exc:
        raise InvalidRequest("Request body is nested too deeply to be a request.") from exc
    if kept:
        data, found = _put_back(data, kept, images_at, data_urls)
        if found != len(kept):  # cannot happen with the lexer above; never guess
            return parse_json(decode_body(next(iter(kept.values())).buffer))
    # A lone surrogate can only arrive as a \uD800-\uDFFF escape: none without a
    # backslash (one memchr, where looking for "\\ud" scans a large body character by
    # character).
    if "\\" in text and _has_lone_surrogate(data):
        raise InvalidRequest(
            "Request body has a lone UTF-16 surrogate escape (such as \\ud800) in a string: "
            "it is not a character; send valid Unicode."
        )
    return data


def _put_back(
    data: Any, kept: Mapping[str, Base64Run], images_at: tuple[str | type[int], ...], data_urls: bool
) -> tuple[Any, int]:
    """``data`` with every kept run not at ``images_at`` as its text; and how many were found."""
    found = 0
    stack: list[tuple[Any, int]] = []  # (a dict or list, how much of images_at its path matches)

    def value(item: Any, depth: int) -> Any:
        nonlocal found
        run = kept.get(item) if isinstance(item, str) else None
        if run is None:
            if isinstance(item, (dict, list)):
                stack.append((item, depth))
            return item
        found += 1
        if images_at and depth == len(images_at) and (run.data_start > run.start) == data_urls:
            return item
        return run.text()

    def step(depth: int, key: str | int) -> int:
        if 0 <= depth < len(images_at):
            wanted = images_at[depth]
            if (wanted is int) if isinstance(key, int) else (wanted == key):
                return depth + 1
        return -1

    root = value(data, 0)
    while stack:
        container, depth = stack.pop()
        if isinstance(container, list):
            for index, item in enumerate(container):
                container[index] = value(item, step(depth, index))
            continue
        items = list(container.items())
        if any(key in kept for key, _ in items):
            container.clear()  # a key kept: the same order, the key as its text
            for key, item in items:
                if key in kept:
                    found += 1
                    key = kept[key].text()
                container[key] = value(item, step(depth, key))
        else:
            for key, item in items:
                container[key] = value(item, step(depth, key))
    return root, found


def _has_lone_surrogate(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if item.isascii():  # known without reading it: an image's base64 costs nothing
                continue
            try:
                item.encode()
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def generate_body_json(body: bytes | str, kept: Mapping[str, Base64Run] | None = None) -> dict[str, Any]:
    """A ``/api/generate`` body's JSON object, not yet validated, or ``InvalidRequest``.

    A server counts what it must bound in it (``RequestGuard.check_part_count``) before
    ``parse_generate_request`` builds a model per part. With ``kept`` (the text is
    ``decode_body_keeping_base64``'s), an image's ``inline_data.data`` may be the
    placeholder of a run in ``kept``.
    """
    if not body.strip():
        raise InvalidRequest("Empty request body: send a JSON object with messages, time, pass and sign.")
    data = parse_json(body, kept, images_at=GENERATE_IMAGE_PATH)
    if not isinstance(data, dict):
        raise InvalidRequest(f"Request body must be a JSON object, not {type(data).__name__}.")
    return data


def parse_generate_request(body: bytes | str | dict[str, Any]) -> GenerateRequest:
    """Validate a request body, in the reference server's order, naming what is wrong.

    ``body`` is the bytes received, their text, or ``generate_body_json``'s object.
    Raises ``InvalidRequest`` for anything a server must answer 400 to.
    """
    data = body if isinstance(body, dict) else generate_body_json(body)
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest(INVALID_HISTORY, field="messages")
    last = messages[-1]
    if not isinstance(last, dict) or last.get("role") != "user":
        raise InvalidRequest(INVALID_HISTORY, field="messages")
    for index, message in enumerate(messages):
        if isinstance(message, dict) and message.get("parts") == []:
            # Gemini refuses a message with no parts; taking it as "" would hide a broken client.
            raise InvalidRequest(
                f"messages[{index}].parts is empty: a message holds at least one part "
                '(its text as {"text": "..."}). Send its text, or leave the message out.',
                field=f"messages.{index}.parts",
            )
    try:
        return GenerateRequest.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"])
        hint = (" Send a number from 0 to 2, or leave it out for the server's default."
                if field == "temperature" else "")
        raise InvalidRequest(f"Invalid field {field!r}: {error['msg']}.{hint}", field=field) from exc


def error_body(message: str, code: Any = None, **extra: Any) -> bytes:
    """The JSON error body: ``{"error": {"message": ...}}``, with ``code`` when given."""
    error: dict[str, Any] = {"message": message}
    if code is not None:
        error["code"] = code
    error.update(extra)
    return json.dumps({"error": error}, ensure_ascii=False).encode()


def parse_error_body(text: str) -> tuple[str | None, Any]:
    """``(message, code)`` from an error body; the raw text when it is not the JSON shape."""
    try:
        data = json.loads(text)
    except ValueError:
        return (text.strip() or None), None
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict):
            message = error.get("message")
            return (str(message) if message is not None else None), error.get("code")
        if isinstance(error, str):
            return error, None
        if "message" in data:
            return str(data["message"]), data.get("code")
    return (text.strip() or None), None


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delay-seconds or an HTTP date.

    >>> parse_retry_after("3")
    3.0
    >>> parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0)
    10.0
    """
    if not value or not value.strip():
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # an HTTP date is always GMT, even when it fails to say so
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
