"""Hostile JSON against ``POST /api/generate`` and ``POST /api/auth``.

Every row is answered with its documented 4xx (README, "What the server answers"),
or 200 where a hostile-looking body is in fact valid; never a 5xx or a traceback.
"""

from __future__ import annotations

import json

import pytest

from gprochat.protocol import build_generate_request

from .conftest import ServedProcess
from .probes import (
    MAX_BODY,
    MAX_CHARS,
    MAX_MESSAGES,
    MAX_PARTS,
    PASSWORDS,
    SECRET,
    TEXT_PLAIN,
    P,
    Probe,
    chunked,
    deep,
    generate,
    generate_body,
    now_ms,
    padded_body,
    post,
    run,
    signed_text_with_sign,
    with_literal,
)
from .rawhttp import Answer, request

FAKE_SIGN = "0" * 64


def _body(**fields: object) -> dict[str, object]:
    body = generate_body()
    body.update(fields)
    return body


def _without(key: str) -> dict[str, object]:
    body = generate_body()
    del body[key]
    return body


def _messages(messages: object) -> dict[str, object]:
    return _body(messages=messages)


def _parts_body(count: int) -> dict[str, object]:
    """A valid signed body whose one message has ``count`` parts: empty texts, then "Hi"."""
    parts = [{"text": ""}] * (count - 1) + [{"text": "Hi"}]
    return build_generate_request([{"role": "user", "parts": parts}], timestamp=now_ms(),
                                  secret_key=SECRET, password=PASSWORDS[0])


def _history(count: int) -> list[dict[str, object]]:
    roles = ["user", "model"]
    return [{"role": roles[i % 2], "parts": [{"text": f"turn {i}"}]} for i in range(count)]


def _streamed(answers: list[Answer]) -> None:
    assert answers[0].status == 200 and answers[0].body, answers



GENERATE = [
    # -- the body as a whole
    P("empty body", lambda: generate(b""), 400, mentions=("empty",)),
    P("whitespace body", lambda: generate(b" \r\n\t "), 400, mentions=("empty",)),
    P("truncated JSON", lambda: generate(b'{"messages": [{"role": "user", "parts": ['), 400,
      mentions=("json",)),
    P("top-level array", lambda: generate(b"[]"), 400, mentions=("object", "list", "array")),
    P("top-level string", lambda: generate(b'"hello"'), 400, mentions=("object", "str")),
    P("top-level number", lambda: generate(b"42"), 400, mentions=("object", "int")),
    P("top-level null", lambda: generate(b"null"), 400, mentions=("object", "none", "null")),
    P("not UTF-8", lambda: generate(b'{"messages": "\xff\xfe\xfa"}'), 400, mentions=("utf-8",)),
    P("UTF-8 BOM before valid JSON", lambda: generate(b"\xef\xbb\xbf" + json.dumps(generate_body()).encode()),
      200, 400, mentions=("bom", "json")),
    P("nested 10,000 deep", lambda: generate(deep(10_000)), 400, mentions=("deep", "nest", "json")),
    P("messages nested 10,000 deep",
      lambda: generate('{"messages": ' + deep(10_000) + ', "time": 1, "pass": null, "sign": "x"}'), 400,
      mentions=("deep", "nest", "json", "message")),
    P("an object nested 10,000 deep in a part",
      lambda: generate(with_literal(generate_body(), ["messages", 0, "parts", 0], deep(10_000, '{"a":', "}")
                                    .replace("}", "1}", 1))),
      400, mentions=("deep", "nest", "json", "text")),
    P("NaN literal", lambda: generate(with_literal(generate_body(), ["time"], "NaN")), 400,
      mentions=("time", "nan", "json")),
    P("Infinity literal", lambda: generate(with_literal(generate_body(), ["time"], "Infinity")), 400,
      mentions=("time", "infinity", "json")),
    P("-Infinity literal", lambda: generate(with_literal(generate_body(), ["time"], "-Infinity")), 400,
      mentions=("time", "infinity", "json")),
    P("time = 1e400", lambda: generate(with_literal(generate_body(), ["time"], "1e400")), 400,
      mentions=("time", "1e400")),
    P("time of 5,000 digits", lambda: generate(with_literal(generate_body(), ["time"], "9" * 5000)), 400,
      mentions=("time", "digits", "integer")),
    P("duplicate key: a bad time after a good one",
      lambda: generate(json.dumps(generate_body())[:-1].encode() + b', "time": "soon"}'), 400,
      mentions=("time", "duplicate")),
    # -- messages
    P("messages missing", lambda: generate(_without("messages")), 400, mentions=("message",)),
    P("messages is an object", lambda: generate(_messages({})), 400, mentions=("message",)),
    P("messages is a string", lambda: generate(_messages("Hi")), 400, mentions=("message",)),
    P("messages empty", lambda: generate(_messages([])), 400, mentions=("message",)),
    P("a message is a number", lambda: generate(_messages([1])), 400, mentions=("message",)),
    P("last message from the model",
      lambda: generate(_messages([{"role": "model", "parts": [{"text": "Hi"}]}])), 400,
      mentions=("user",)),
    P("role is a number", lambda: generate(_messages([{"role": 5, "parts": [{"text": "Hi"}]}])), 400,
      mentions=("role", "user")),
    P("history role unknown",
      lambda: generate(_messages([{"role": "wizard", "parts": [{"text": "x"}]},
                                  {"role": "user", "parts": [{"text": "Hi"}]}])), 400,
      mentions=("role",)),
    P("parts missing", lambda: generate(_messages([{"role": "user"}])), 400, mentions=("parts",)),
    P("parts empty", lambda: generate(_messages([{"role": "user", "parts": []}])), 400,
      mentions=("messages[0].parts is empty",)),
    P("parts empty in the history",
      lambda: generate(_messages([{"role": "user", "parts": [{"text": "a"}]},
                                  {"role": "model", "parts": []},
                                  {"role": "user", "parts": [{"text": "Hi"}]}])), 400,
      mentions=("messages[1].parts is empty",)),
    # A stock client sends one text part per message: thousands of empty ones cost the
    # server a model per part, so they are counted (413) before any is built.
    P("2,000 empty text parts and Hi",
      lambda: generate(_messages([{"role": "user", "parts": [{"text": ""}] * 2000 + [{"text": "Hi"}]}])),
      413, mentions=(f"Too many content parts: 2001 in the request's messages; this server accepts "
                f"at most {MAX_PARTS} per request (--max-parts)",)),
    P("parts over the limit across the history",
      lambda: generate(_messages([*_history(MAX_MESSAGES - 2),
                                  {"role": "user", "parts": [{"text": ""}] * MAX_PARTS}])),
      413, mentions=("--max-parts",)),
    P("parts at the limit", lambda: generate(_parts_body(MAX_PARTS)), 200),
    P("parts is a string", lambda: generate(_messages([{"role": "user", "parts": "Hi"}])), 400,
      mentions=("parts",)),
    P("a part without text", lambda: generate(_messages([{"role": "user", "parts": [{}]}])), 400,
      mentions=("text",)),
    P("text is a number", lambda: generate(_messages([{"role": "user", "parts": [{"text": 5}]}])), 400,
      mentions=("text",)),
    P("text is null", lambda: generate(_messages([{"role": "user", "parts": [{"text": None}]}])), 400,
      mentions=("text",)),
    P("lone high surrogate in the message",
      lambda: generate(_body(messages=[{"role": "user", "parts": [{"text": "a\ud800b"}]}], sign=FAKE_SIGN)),
      400, mentions=("surrogate", "unicode", "utf")),
    P("lone low surrogate in the history",
      lambda: generate(_body(messages=[{"role": "user", "parts": [{"text": "\udc00"}]},
                                       {"role": "model", "parts": [{"text": "ok"}]},
                                       {"role": "user", "parts": [{"text": "Hi"}]}])),
      400, mentions=("surrogate", "unicode", "utf")),
    P("a valid surrogate pair (emoji) is fine", lambda: generate(signed_text_with_sign("smile \U0001f600")),
      200, check=_streamed),
    P("control characters and NUL in the text are fine",
      lambda: generate(signed_text_with_sign("a\u0000b\u0007c\u202e")), 200, check=_streamed),
    P("unknown extra fields are ignored", lambda: generate(_body(mode="x", stream=True, extra=[1])), 200,
      check=_streamed),
    # -- time
    P("time missing", lambda: generate(_without("time")), 400, mentions=("time",)),
    P("time is a string", lambda: generate(_body(time=str(now_ms()))), 400, mentions=("time",)),
    P("time is a float", lambda: generate(_body(time=now_ms() + 0.5)), 400, mentions=("time",)),
    P("time is true", lambda: generate(_body(time=True)), 400, mentions=("time",)),
    P("time an hour ahead", lambda: generate(generate_body(timestamp=now_ms() + 3_600_000)), 401,
      mentions=("clock",)),
    P("time is -2^63", lambda: generate(generate_body(timestamp=-(2**63))), 401, mentions=("clock",)),
    P("time is 2^64 (signed)", lambda: generate(generate_body(timestamp=2**64)), 401, mentions=("clock",)),
    P("time in seconds, not milliseconds", lambda: generate(generate_body(timestamp=now_ms() // 1000)), 401,
      mentions=("milliseconds",)),
    # -- sign
    P("sign missing", lambda: generate(_without("sign")), 400, mentions=("sign",)),
    P("sign is a number", lambda: generate(_body(sign=123)), 400, mentions=("sign",)),
    P("sign is null", lambda: generate(_body(sign=None)), 400, mentions=("sign",)),
    P("sign wrong", lambda: generate(_body(sign=FAKE_SIGN)), 401, mentions=("signature",)),
    P("sign of another secret", lambda: generate(generate_body(secret="not-" + SECRET)), 401,
      mentions=("signature",)),
    P("sign 60,000 characters", lambda: generate(_body(sign="a" * 60_000)), 401, mentions=("signature",)),
    P("sign with a lone surrogate", lambda: generate(_body(sign="\ud800" * 64)), 400, 401,
      mentions=("surrogate", "unicode", "utf", "signature")),
    # -- pass
    P("pass missing on a locked site", lambda: generate(_without("pass")), 401, mentions=("password",)),
    P("pass wrong", lambda: generate(generate_body(password="pw-three")), 401, mentions=("password",)),
    P("pass is a number", lambda: generate(_body(**{"pass": 123})), 400, mentions=("pass",)),
    P("pass is a list", lambda: generate(_body(**{"pass": list(PASSWORDS)})), 400, mentions=("pass",)),
    P("pass with a lone surrogate", lambda: generate(_body(**{"pass": "pw\ud800"})), 400,
      mentions=("surrogate", "unicode", "utf")),
    P("pass is the password list itself", lambda: generate(generate_body(password=",".join(PASSWORDS))), 401,
      mentions=("password",)),
    P("the second site password is accepted", lambda: generate(generate_body(password=PASSWORDS[1])), 200,
      check=_streamed),
    # -- exact limits
    P(f"message of exactly {MAX_CHARS} characters", lambda: generate(generate_body("x" * MAX_CHARS)), 200,
      check=_streamed),
    P(f"message of {MAX_CHARS + 1} characters", lambda: generate(generate_body("x" * (MAX_CHARS + 1))), 413,
      mentions=("long",)),
    P(f"a history message of {MAX_CHARS + 1} characters",
      lambda: generate(generate_body(history=[{"role": "user", "parts": [{"text": "y" * (MAX_CHARS + 1)}]},
                                              {"role": "model", "parts": [{"text": "ok"}]}])),
      413, mentions=("long",)),
    P(f"exactly {MAX_MESSAGES} messages", lambda: generate(generate_body(history=_history(MAX_MESSAGES - 1))),
      200, check=_streamed),
    P(f"{MAX_MESSAGES + 1} messages", lambda: generate(generate_body(history=_history(MAX_MESSAGES))), 413,
      mentions=("messages",)),
    P(f"body of exactly {MAX_BODY} bytes", lambda: generate(padded_body(MAX_BODY)), 200, check=_streamed),
    P(f"body of {MAX_BODY + 1} bytes", lambda: generate(padded_body(MAX_BODY + 1)), 413,
      mentions=("too large",)),
    P("a 2 MB string", lambda: generate(generate_body("z" * 2_000_000)), 413, mentions=("too large",)),
    P("chunked body over the limit", lambda: chunked("/api/generate", padded_body(MAX_BODY * 2)), 413,
      mentions=("too large",)),
    P("chunked valid body", lambda: chunked("/api/generate", json.dumps(generate_body()).encode(), 7), 200,
      check=_streamed),
    P("Content-Length of a terabyte, small body",
      lambda: request("POST", "/api/generate", b"{}", headers=[("Content-Length", str(10**12))],
                      content_length=False), 413, mentions=("too large",)),
    # -- content types the reference accepts
    P("form content type, JSON body", lambda: generate(generate_body(),
                                                       ("Content-Type", "application/x-www-form-urlencoded")),
      200, check=_streamed),
    P("no content type", lambda: request("POST", "/api/generate", json.dumps(generate_body()).encode()), 200,
      check=_streamed),
]


def _auth(body: bytes | str | dict[str, object]) -> bytes:
    if isinstance(body, dict):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode()
    return post("/api/auth", body, TEXT_PLAIN)


def _code(expected: int) -> object:
    def check(answers: list[Answer]) -> None:
        if answers[0].status == 200:
            assert answers[0].json() == {"code": expected}, answers
    return check


AUTH = [
    P("auth: the first password", lambda: _auth({"pass": PASSWORDS[0]}), 200, check=_code(0)),
    P("auth: the second password", lambda: _auth({"pass": PASSWORDS[1]}), 200, check=_code(0)),
    P("auth: a wrong password", lambda: _auth({"pass": "nope"}), 200, check=_code(-1)),
    P("auth: a password's prefix", lambda: _auth({"pass": PASSWORDS[0][:-1]}), 200, check=_code(-1)),
    P("auth: invalid JSON", lambda: _auth(b"{pass: 1"), 400, mentions=("json",)),
    P("auth: not UTF-8", lambda: _auth(b'{"pass": "\xff"}'), 400, mentions=("utf-8", "json")),
    P("auth: pass with a lone surrogate", lambda: _auth('{"pass": "\\ud800"}'), 400,
      mentions=("surrogate", "unicode", "utf")),
    P("auth: pass is a number", lambda: _auth({"pass": 5}), 200, 400, check=_code(-1), mentions=("pass",)),
    P("auth: nested 10,000 deep", lambda: _auth(deep(10_000)), 400, mentions=("deep", "nest", "json")),
    P("auth: 5,000-digit integer", lambda: _auth('{"pass": ' + "7" * 5000 + "}"), 200, 400,
      check=_code(-1), mentions=("digits", "integer", "pass", "json")),
    P("auth: top-level array", lambda: _auth(b"[1, 2]"), 200, 400, check=_code(-1),
      mentions=("object", "json")),
    P("auth: body over the limit", lambda: _auth(b'{"pass": "' + b"p" * MAX_BODY + b'"}'), 413,
      mentions=("too large",)),
]


@pytest.mark.parametrize("probe", GENERATE, ids=str)
async def test_generate(probe: Probe, server: ServedProcess) -> None:
    await run(probe, server.port)


@pytest.mark.parametrize("probe", AUTH, ids=str)
async def test_auth(probe: Probe, server: ServedProcess) -> None:
    await run(probe, server.port)
