"""Hostile requests to the OpenAI gateway (``/v1``) of a locked site.

Errors there are OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``,
and name the parameter; a locked site is locked on ``/v1`` too.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from .conftest import ServedProcess
from .probes import (
    API_KEY,
    BEARER,
    JSON_TYPE,
    LIMITED_PASSWORD,
    MAX_BODY,
    MAX_CHARS,
    MAX_MESSAGES,
    MAX_PARTS,
    PASSWORDS,
    Build,
    Probe,
    chunked,
    completion_body,
    completions,
    deep,
    run,
)
from .rawhttp import Answer, request


def P(name: str, build: Build, *expect: int, **options: Any) -> Probe:
    """A row whose errors are in OpenAI's shape."""
    return Probe(name, build, expect, **{"shape": "openai", **options})


def _completed(answers: list[Answer]) -> None:
    answer = answers[0]
    assert answer.status == 200, answer
    data = answer.json()
    assert data["object"] == "chat.completion" and data["choices"][0]["message"]["content"], data


def _streamed(answers: list[Answer]) -> None:
    assert answers[0].status == 200 and answers[0].body.rstrip().endswith(b"data: [DONE]"), answers


def _param(name: str, value: object) -> bytes:
    return completions(completion_body(**{name: value}))


def _literal(name: str, literal: str) -> bytes:
    text = json.dumps(completion_body())[:-1] + f', "{name}": {literal}}}'
    return completions(text)


def _with_auth(value: str | None) -> bytes:
    headers = [JSON_TYPE] + ([("Authorization", value)] if value is not None else [])
    return completions(completion_body(), *headers)


def _history(count: int) -> list[dict[str, str]]:
    return [{"role": ("user", "assistant")[i % 2], "content": f"turn {i}"} for i in range(count)]


_NOW = {"role": "user", "content": "now"}

AUTH = [
    P("no API key", lambda: _with_auth(None), 401, mentions=("key",)),
    P("wrong API key", lambda: _with_auth("Bearer not-the-key"), 401, mentions=("key",)),
    P("empty bearer", lambda: _with_auth("Bearer "), 401, mentions=("key",)),
    P("Basic scheme", lambda: _with_auth("Basic " + API_KEY), 401, mentions=("key", "bearer")),
    P("API key of bytes that are not UTF-8", lambda: _with_auth("Bearer \xff\xfe"), 401, 400,
      mentions=("key",)),
    P("the site password as bearer", lambda: _with_auth(f"Bearer {PASSWORDS[1]}"), 200, check=_completed),
    P("the right key", lambda: _with_auth(f"Bearer {API_KEY}"), 200, check=_completed),
    P("the right key, streamed", lambda: _param("stream", True), 200, check=_streamed),
    P("models without a key", lambda: request("GET", "/v1/models"), 401, mentions=("key",)),
    P("models with the key", lambda: request("GET", "/v1/models", headers=[BEARER]), 200),
]

BODIES = [
    P("invalid JSON", lambda: completions(b'{"model": "echo", "messages": ['), 400, mentions=("json",)),
    P("empty body", lambda: completions(b""), 400, mentions=("json", "body", "empty")),
    P("top-level array", lambda: completions(b"[]"), 400, mentions=("object", "list", "array", "body")),
    P("not UTF-8", lambda: completions(b'{"model": "\xff"}'), 400, mentions=("utf-8", "json")),
    P("nested 10,000 deep", lambda: completions(deep(10_000)), 400, mentions=("deep", "nest", "json")),
    P("messages missing", lambda: completions({"model": "echo"}), 400, mentions=("messages",)),
    P("messages empty", lambda: _param("messages", []), 400, mentions=("messages",)),
    P("messages is a string", lambda: _param("messages", "Hi"), 400, mentions=("messages",)),
    P("model missing", lambda: completions({"messages": [{"role": "user", "content": "Hi"}]}), 400,
      mentions=("model",)),
    P("model is a number", lambda: _param("model", 5), 400, mentions=("model",)),
    P("unknown model", lambda: _param("model", "gpt-17"), 404, mentions=("model",)),
    P("role unknown", lambda: _param("messages", [{"role": "wizard", "content": "Hi"}]), 400,
      mentions=("role",)),
    P("user content null", lambda: completions(completion_body(None)), 400,
      mentions=("messages[0].content is null",)),
    P("user content missing", lambda: _param("messages", [{"role": "user"}]), 400,
      mentions=("messages[0].content is null or missing",)),
    P("assistant content null in the history",
      lambda: _param("messages", [{"role": "user", "content": "a"},
                                  {"role": "assistant", "content": None},
                                  {"role": "user", "content": "Hi"}]), 200, check=_completed),
    P("2,000 empty text parts and hi",
      lambda: completions(completion_body([{"type": "text", "text": ""}] * 2000
                                          + [{"type": "text", "text": "hi"}])),
      413, mentions=(f"Too many content parts: 2001 in the request's messages; this server accepts "
                f"at most {MAX_PARTS} per request (--max-parts)",)),
    P("text parts at the limit",
      lambda: completions(completion_body([{"type": "text", "text": ""}] * (MAX_PARTS - 1)
                                          + [{"type": "text", "text": "hi"}])),
      200, check=_completed),
    P("content is a number", lambda: completions(completion_body(5)), 400, mentions=("content",)),
    P("content with a lone surrogate", lambda: completions(completion_body("a\ud800")), 400,
      mentions=("surrogate", "unicode", "utf")),
    P("image content part", lambda: completions(completion_body([{"type": "image_url", "image_url": {}}])),
      400, mentions=("image", "text")),
    P("last message from the assistant", lambda: _param("messages", _history(2)), 400,
      mentions=("user",)),
    P(f"exactly {MAX_MESSAGES} messages", lambda: _param("messages", [*_history(MAX_MESSAGES - 1), _NOW]),
      200, check=_completed),
    P(f"{MAX_MESSAGES + 1} messages", lambda: _param("messages", [*_history(MAX_MESSAGES), _NOW]),
      413, mentions=("messages",)),
    P(f"content of exactly {MAX_CHARS} characters", lambda: completions(completion_body("x" * MAX_CHARS)),
      200, check=_completed),
    P(f"content of {MAX_CHARS + 1} characters", lambda: completions(completion_body("x" * (MAX_CHARS + 1))),
      413, mentions=("long",)),
    P("body over the limit", lambda: completions(completion_body("x" * MAX_BODY)), 413,
      mentions=("too large",)),
    P("chunked body over the limit",
      lambda: chunked("/v1/chat/completions", json.dumps(completion_body("x" * (MAX_BODY * 2))).encode(),
                      4096, JSON_TYPE, BEARER),
      413, mentions=("too large",)),
    P("chunked valid body", lambda: chunked("/v1/chat/completions", json.dumps(completion_body()).encode(),
                                            5, JSON_TYPE, BEARER),
      200, check=_completed),
]

PARAMETERS = [
    P("stream is a string", lambda: _param("stream", "yes"), 400, mentions=("stream",)),
    P("stream_options is a string", lambda: _param("stream_options", "usage"), 400,
      mentions=("stream_options",)),
    P("temperature -1", lambda: _param("temperature", -1), 400, mentions=("temperature",)),
    P("temperature 2.0001", lambda: _param("temperature", 2.0001), 400, mentions=("temperature",)),
    P("temperature 2 (the maximum)", lambda: _param("temperature", 2), 200, check=_completed),
    P("temperature is a string", lambda: _param("temperature", "hot"), 400, mentions=("temperature",)),
    P("temperature NaN", lambda: _literal("temperature", "NaN"), 400, mentions=("temperature", "nan")),
    P("temperature 1e400", lambda: _literal("temperature", "1e400"), 400,
      mentions=("temperature", "1e400", "finite")),
    P("top_p 1.5", lambda: _param("top_p", 1.5), 400, mentions=("top_p",)),
    P("presence_penalty -3", lambda: _param("presence_penalty", -3), 400, mentions=("presence_penalty",)),
    P("frequency_penalty 'x'", lambda: _param("frequency_penalty", "x"), 400,
      mentions=("frequency_penalty",)),
    P("max_tokens 0", lambda: _param("max_tokens", 0), 400, mentions=("max_tokens",)),
    P("max_tokens -1", lambda: _param("max_tokens", -1), 400, mentions=("max_tokens",)),
    P("max_tokens 1.5", lambda: _param("max_tokens", 1.5), 400, mentions=("max_tokens",)),
    P("max_tokens of 5,000 digits", lambda: _literal("max_tokens", "9" * 5000), 400,
      mentions=("max_tokens", "digits", "integer")),
    P("max_completion_tokens is a string", lambda: _param("max_completion_tokens", "ten"), 400,
      mentions=("max_completion_tokens",)),
    P("stop is a number", lambda: _param("stop", 5), 400, mentions=("stop",)),
    P("stop with a lone surrogate", lambda: _param("stop", "\ud800"), 400,
      mentions=("surrogate", "unicode", "utf", "stop")),
    P("seed is a string", lambda: _param("seed", "x"), 400, mentions=("seed",)),
    P("logit_bias is a list", lambda: _param("logit_bias", [1, 2]), 400, mentions=("logit_bias",)),
    P("user is a number", lambda: _param("user", 7), 400, mentions=("user",)),
    P("metadata values must be strings", lambda: _param("metadata", {"a": 1}), 400, mentions=("metadata",)),
    P("n = 2", lambda: _param("n", 2), 400, mentions=("n",)),
    P("n = 0", lambda: _param("n", 0), 400, mentions=("n",)),
    P("n = 1 is fine", lambda: _param("n", 1), 200, check=_completed),
    P("tools", lambda: _param("tools", [{"type": "function", "function": {"name": "f"}}]), 400,
      mentions=("tools",)),
    P("tool_choice required", lambda: _param("tool_choice", "required"), 400, mentions=("tool_choice",)),
    P("functions", lambda: _param("functions", [{"name": "f"}]), 400, mentions=("functions",)),
    P("response_format json_object", lambda: _param("response_format", {"type": "json_object"}), 400,
      mentions=("response_format",)),
    P("logprobs true", lambda: _param("logprobs", True), 400, mentions=("logprobs",)),
    P("top_logprobs 5", lambda: _param("top_logprobs", 5), 400, mentions=("logprobs",)),
    P("audio", lambda: _param("audio", {"voice": "alloy", "format": "wav"}), 400, mentions=("audio",)),
    P("modalities audio", lambda: _param("modalities", ["text", "audio"]), 400, mentions=("modalities",)),
    P("prediction", lambda: _param("prediction", {"type": "content", "content": "x"}), 400,
      mentions=("prediction",)),
    P("an unknown parameter", lambda: _param("frobnicate", True), 400, mentions=("frobnicate",)),
    P("a parameter named with a lone surrogate", lambda: _literal("\\ud800", "1"), 400),
    P("duplicate model key, the last one unknown",
      lambda: completions(json.dumps(completion_body())[:-1] + ', "model": "gpt-17"}'), 400, 404,
      mentions=("model", "duplicate")),
]


@pytest.mark.parametrize("probe", AUTH + BODIES + PARAMETERS, ids=str)
async def test_gateway(probe: Probe, server: ServedProcess) -> None:
    await run(probe, server.port)


LIMITED = [
    P("password-only site: no bearer", lambda: _with_auth(None), 401, mentions=("key", "password")),
    P("password-only site: wrong bearer", lambda: _with_auth("Bearer guess"), 401,
      mentions=("key", "password")),
    P("password-only site: the site password as bearer", lambda: _with_auth(f"Bearer {LIMITED_PASSWORD}"),
      200, check=_completed),
]


@pytest.mark.parametrize("probe", LIMITED, ids=str)
async def test_password_only_site(probe: Probe, limited: ServedProcess) -> None:
    await run(probe, limited.port)
