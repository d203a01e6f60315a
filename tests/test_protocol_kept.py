"""``protocol.decode_body_keeping_base64``: a large image's base64 left in the body's bytes.

Whatever the body, parsing the kept text gives what parsing the whole body gives (each
placeholder standing for its run's text), and the same error in the same words.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from gprochat import protocol
from gprochat.images import Base64Run, Image
from gprochat.protocol import GENERATE_IMAGE_PATH, InvalidRequest, decode_body_keeping_base64, parse_json

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 400  # 100 KiB: 137 KB of base64
DATA = base64.b64encode(PNG).decode()
URL_PATH = ("messages", int, "content", int, "image_url", "url")


def generate(*parts: Any, **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "parts": [{"text": "What is this?"}, *parts]}], **extra}


def inline(data: str, mime: str = "image/png") -> dict[str, Any]:
    return {"inline_data": {"mime_type": mime, "data": data}}


def materialized(value: Any, kept: dict[str, Base64Run]) -> Any:
    """``value`` with each placeholder as its run's text."""
    if isinstance(value, str):
        return kept[value].text() if value in kept else value
    if isinstance(value, dict):
        return {materialized(k, kept): materialized(v, kept) for k, v in value.items()}
    if isinstance(value, list):
        return [materialized(item, kept) for item in value]
    return value


def both_ways(
    body: bytes, path: tuple[Any, ...] = GENERATE_IMAGE_PATH, urls: bool = False
) -> tuple[Any, Any, dict[str, Base64Run]]:
    """(the whole body parsed, the kept text parsed, its runs); errors as ("error", message)."""
    try:
        whole = parse_json(body)
    except InvalidRequest as exc:
        whole = ("error", exc.message)
    try:
        text, kept = decode_body_keeping_base64(body)
        data = parse_json(text, kept, images_at=path, data_urls=urls)
    except InvalidRequest as exc:
        return whole, ("error", exc.message), {}
    return whole, data, kept


def test_an_image_stays_in_the_body_and_the_rest_is_parsed_as_ever() -> None:
    body = json.dumps(generate(inline(DATA), time=1, sign="x")).encode()
    whole, data, kept = both_ways(body)
    assert len(kept) == 1
    placeholder = data["messages"][0]["parts"][1]["inline_data"]["data"]
    run = kept[placeholder]
    assert run.buffer is body and body[run.start : run.end] == DATA.encode()
    assert len(placeholder) < 100 and materialized(data, kept) == whole
    image = Image.from_base64(run, "image/png")
    assert image.decode() == PNG


def test_a_data_url_stays_in_the_body_on_the_gateway_path() -> None:
    url = "data:image/png;base64," + DATA
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What?"}, {"type": "image_url", "image_url": {"url": url}}]}]}).encode()
    whole, data, kept = both_ways(body, URL_PATH, urls=True)
    placeholder = data["messages"][0]["content"][1]["image_url"]["url"]
    assert placeholder.startswith("data:image/png;base64,gprochat-kept-")
    assert kept[placeholder].text() == url and materialized(data, kept) == whole
    assert protocol.parse_json(body) == whole


LARGE_TEXT = DATA  # base64 where text goes: kept while decoding, put back while parsing


@pytest.mark.parametrize(
    "body",
    [
        json.dumps(generate({"text": LARGE_TEXT})),  # base64 as a message's text
        json.dumps(generate(inline("data:image/png;base64," + DATA))),  # a data URL as inline data
        json.dumps({"messages": [{"role": "user", "parts": [inline(DATA)]}], LARGE_TEXT: 1}),  # a key
        json.dumps({LARGE_TEXT: 1, "b": [LARGE_TEXT, {"x": LARGE_TEXT}], "z": 2}),
        json.dumps(generate(inline(DATA), inline(DATA), {"text": DATA}, sign=DATA)),
        json.dumps([DATA, DATA]),
        json.dumps(DATA),
    ],
    ids=["text", "data URL as inline data", "key", "keys and lists", "several", "list", "a string"],
)
def test_runs_not_where_images_go_are_put_back_as_text(body: str) -> None:
    whole, data, kept = both_ways(body.encode())
    assert kept and materialized(data, kept) == whole
    images = [v for v in _strings(data) if v in kept]
    # only bare base64 at an image's inline_data.data stays a placeholder
    assert all(kept[v].prefix == "" for v in images)
    assert len(images) == body.count('"data": "' + DATA + '"')


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (_strings(k) + _strings(v))]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return []


ESCAPED = [
    # a quote escaped inside a string, right before a long run of base64 characters
    '{"messages": [{"role": "user", "parts": [{"text": "a \\"' + DATA + '\\" b"}]}]}',
    '{"a": "x\\"' + DATA + '"}',
    '{"a": "x\\\\", "b": "' + DATA + '"}',  # an escaped backslash, then a real closing quote
    '{"a": "x\\\\\\"' + DATA + '"}',  # an escaped backslash and an escaped quote
    '{"a": "\\u0041' + DATA + '"}',
    '{"a": "' + DATA + '\\/"}',  # an escape inside the run: not kept
    '{"a": "' + DATA[:70_000] + '\\/' + DATA[70_000:] + '"}',
]


@pytest.mark.parametrize("body", ESCAPED)
def test_escapes_are_read_as_the_parser_reads_them(body: str) -> None:
    whole, data, kept = both_ways(body.encode())
    assert not isinstance(whole, tuple)
    assert materialized(data, kept) == whole


BROKEN = [
    '{"messages": [' + json.dumps(inline(DATA)) + '}',  # a bracket missing after the run
    '{"a": "' + DATA + '", "b": }',
    '{"a": "' + DATA + '" "b": 1}',
    '{"a": "' + DATA + '"} extra',
    '{"a": "' + DATA + '", "b": "\x01"}',  # a control character in a later string
    '{"a": "' + DATA + '", "b": NaN}',
    '{"a": "' + DATA + '", "b": "\\ud800"}',  # a lone surrogate
    '{"a": "' + DATA + '", "b": 1' + "0" * 200 + '}',
    '{"a": "' + DATA,  # unterminated
    '"' + DATA + '"' + DATA + '"',
    "[" * 100_000 + '"' + DATA + '"' + "]" * 100_000,  # nested too deeply
]


@pytest.mark.parametrize("body", BROKEN)
def test_a_broken_body_is_refused_in_the_same_words(body: str) -> None:
    whole, data, _ = both_ways(body.encode())
    assert isinstance(whole, tuple) and whole[0] == "error"
    assert data == whole


def test_a_body_not_utf8_is_refused_in_the_same_words() -> None:
    body = b'{"a": "' + DATA.encode() + b'", "b": "\xff"}'
    whole, data, _ = both_ways(body)
    assert data == whole == ("error", "Request body is not UTF-8: invalid start byte.")


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32", "utf-8-sig"])
def test_other_encodings_are_decoded_whole(encoding: str) -> None:
    body = json.dumps(generate(inline(DATA))).encode(encoding)
    text, kept = decode_body_keeping_base64(body)
    assert not kept and parse_json(text) == parse_json(body)


def test_small_bodies_and_many_strings_are_decoded_whole() -> None:
    small = json.dumps(generate(inline(base64.b64encode(PNG[:1000]).decode()))).encode()
    assert decode_body_keeping_base64(small) == (small.decode(), {})
    # more strings than the lexer steps over (50,000): the body is decoded whole
    many = json.dumps({"many": [""] * 60_000, "image": generate(inline(DATA))}).encode()
    text, kept = decode_body_keeping_base64(many)
    assert not kept and text == many.decode()
    fewer = json.dumps({"many": [""] * 20_000, "image": generate(inline(DATA))}).encode()
    assert len(decode_body_keeping_base64(fewer)[1]) == 1


def test_each_request_has_its_own_placeholders() -> None:
    body = json.dumps(generate(inline(DATA))).encode()
    first, second = decode_body_keeping_base64(body)[1], decode_body_keeping_base64(body)[1]
    assert set(first).isdisjoint(second)


def test_a_placeholder_sent_by_a_client_is_just_text() -> None:
    body = json.dumps(generate(inline(DATA))).encode()
    _, kept = decode_body_keeping_base64(body)
    (placeholder,) = kept
    # the same body with the other request's placeholder written in by a client
    forged = json.dumps(generate(inline(placeholder))).encode()
    forged_text, forged_kept = decode_body_keeping_base64(forged)
    assert not forged_kept
    data = protocol.generate_body_json(forged_text, forged_kept)
    assert data["messages"][0]["parts"][1]["inline_data"]["data"] == placeholder
