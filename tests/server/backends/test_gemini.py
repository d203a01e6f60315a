"""GeminiBackend against a scripted Generative Language API upstream on loopback."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gprochat.errors import BackendError
from gprochat.server.backends import BACKENDS, Conversation, GeminiBackend, Turn
from gprochat.server.backends.gemini import SAFETY_CATEGORIES, safety_settings

CONVERSATION = Conversation(
    message="Tell me a joke",
    history=(Turn("user", "Hi"), Turn("model", "Hello")),
    system="You are terse.",
)
USAGE = {"promptTokenCount": 9, "candidatesTokenCount": 12, "totalTokenCount": 21}


def event(candidate: dict[str, Any] | None = None, **extra: Any) -> bytes:
    """One GenerateContentResponse as the API writes it with alt=sse (CRLF CRLF ends it)."""
    response: dict[str, Any] = {}
    if candidate is not None:
        response["candidates"] = [{"index": 0, **candidate}]
    response.update(extra, modelVersion="gemini-2.0-flash")
    return b"data: " + json.dumps(response).encode() + b"\r\n\r\n"


def text_event(text: str, finish: str | None = None) -> bytes:
    candidate: dict[str, Any] = {"content": {"parts": [{"text": text}], "role": "model"}}
    if finish:
        candidate["finishReason"] = finish
    return event(candidate, usageMetadata=USAGE)


def answer(*texts: str) -> list[bytes]:
    *body, last = texts
    return [*(text_event(text) for text in body), text_event(last, "STOP")]


@pytest.fixture
def backend(upstream, closing) -> GeminiBackend:
    return closing(GeminiBackend(api_key="AIza-test", base_url=upstream.url))


async def collect(backend, conversation=CONVERSATION) -> list[str]:
    return [text async for text in backend.stream(conversation)]


async def collect_until_error(backend, conversation=CONVERSATION):
    texts: list[str] = []
    with pytest.raises(BackendError) as caught:
        async for text in backend.stream(conversation):
            texts.append(text)
    return texts, caught.value


async def test_request_maps_conversation_and_streams_in_chunks(upstream, backend):
    upstream.respond_events(answer("Why did", " the chicken", " cross?"))

    assert await collect(backend) == ["Why did", " the chicken", " cross?"]

    [request] = upstream.requests
    assert request.method == "POST"
    assert request.path == "/v1beta/models/gemini-2.0-flash:streamGenerateContent"
    assert request.query == {"alt": "sse"}
    assert request.headers["x-goog-api-key"] == "AIza-test"
    assert "Authorization" not in request.headers
    assert request.json == {
        "contents": [
            {"role": "user", "parts": [{"text": "Hi"}]},
            {"role": "model", "parts": [{"text": "Hello"}]},
            {"role": "user", "parts": [{"text": "Tell me a joke"}]},
        ],
        "systemInstruction": {"parts": [{"text": "You are terse."}]},
        "generationConfig": {"maxOutputTokens": 8000},
        "safetySettings": [
            {"category": category, "threshold": "BLOCK_NONE"} for category in SAFETY_CATEGORIES
        ],
    }


async def test_options_and_conversation_overrides(upstream, closing):
    custom = [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_ONLY_HIGH"}]
    backend = closing(
        GeminiBackend(
            api_key="k", base_url=upstream.url, api_version="v1", safety=json.dumps(custom)
        )
    )
    upstream.respond_events(answer("ok"))
    conversation = Conversation(
        message="again",
        history=(Turn("user", "one"), Turn("user", "two")),
        model="models/gemini-1.5-pro",
        temperature=0.3,
        max_tokens=64,
        stop=("END",),
    )

    assert await collect(backend, conversation) == ["ok"]

    [request] = upstream.requests
    assert request.path == "/v1/models/gemini-1.5-pro:streamGenerateContent"
    assert request.json == {
        # Consecutive turns of one role are merged: Gemini rejects them otherwise.
        "contents": [
            {"role": "user", "parts": [{"text": "one"}, {"text": "two"}, {"text": "again"}]}
        ],
        "generationConfig": {"maxOutputTokens": 64, "temperature": 0.3, "stopSequences": ["END"]},
        "safetySettings": custom,
    }


async def test_events_split_at_awkward_places(upstream, backend):
    texts = ["Grüße, ", "世界 ", "🙂 done"]
    # Odd write sizes put boundaries mid-line, between \r and \n, mid-UTF-8 character.
    upstream.respond_events(answer(*texts), split=(5, 1, 11, 2, 3), pause=0.001)

    assert await collect(backend) == texts


async def test_usage_event_after_finish_is_fine_and_connection_is_reused(upstream, backend):
    upstream.respond_events([*answer("a", "b"), event(usageMetadata=USAGE)])

    assert await collect(backend) == ["a", "b"]
    assert await collect(backend) == ["a", "b"]
    first, second = upstream.requests
    assert first.peer == second.peer


async def test_safety_block_mid_answer(upstream, backend):
    blocked = event(
        {
            "finishReason": "SAFETY",
            "safetyRatings": [
                {"category": "HARM_CATEGORY_HATE_SPEECH", "probability": "HIGH", "blocked": True},
                {"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"},
            ],
        }
    )
    upstream.respond_events([text_event("Sure, here"), blocked])

    texts, error = await collect_until_error(backend)

    assert texts == ["Sure, here"]
    assert error.status == 502
    assert "SAFETY" in error.message and "HARM_CATEGORY_HATE_SPEECH: HIGH" in error.message
    assert "HARASSMENT" not in error.message


async def test_recitation_before_any_text(upstream, backend):
    upstream.respond_events([event({"finishReason": "RECITATION"})])

    texts, error = await collect_until_error(backend)

    assert texts == [] and error.status == 502 and "RECITATION" in error.message


async def test_blocked_prompt(upstream, backend):
    upstream.respond_events([event(promptFeedback={"blockReason": "PROHIBITED_CONTENT"})])

    _, error = await collect_until_error(backend)

    assert "blocked the prompt" in error.message and "PROHIBITED_CONTENT" in error.message


async def test_error_event_mid_stream(upstream, backend):
    overloaded = {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}
    upstream.respond_events([text_event("a"), event(error=overloaded)])

    texts, error = await collect_until_error(backend)

    assert texts == ["a"] and "The model is overloaded." in error.message


async def test_invalid_key_is_a_configuration_error(upstream, backend):
    # What the real API answers for a bad key: 400, not 401.
    upstream.respond_error(
        400,
        {
            "error": {
                "code": 400,
                "message": "API key not valid. Please pass a valid API key.",
                "status": "INVALID_ARGUMENT",
                "details": [
                    {
                        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                        "reason": "API_KEY_INVALID",
                        "domain": "googleapis.com",
                    }
                ],
            }
        },
    )

    _, error = await collect_until_error(backend)

    assert error.status == 502
    assert "configuration error" in error.message
    # What to set, and what Google said, go to the operator's log, not to the client.
    assert "--gemini-api-key" in error.detail and "GPROCHAT_GEMINI_API_KEY" in error.detail
    assert "API key not valid" in error.detail
    assert "--gemini-api-key" not in error.message and "API key not valid" not in error.message


async def test_403_is_a_configuration_error(upstream, backend):
    upstream.respond_error(
        403, {"error": {"code": 403, "message": "Permission denied", "status": "PERMISSION_DENIED"}}
    )

    _, error = await collect_until_error(backend)

    assert error.status == 502 and "configuration error" in error.message


async def test_400_quotes_the_upstream_message(upstream, backend):
    message = "* GenerateContentRequest.contents: contents is not specified"
    upstream.respond_error(400, {"error": {"code": 400, "message": message}})

    _, error = await collect_until_error(backend)

    assert error.status == 502 and message in error.message
    assert "configuration" not in error.message


async def test_429_passes_retry_after(upstream, backend):
    body = {"error": {"code": 429, "message": "Resource exhausted", "status": "RESOURCE_EXHAUSTED"}}
    upstream.respond_error(429, body, {"Retry-After": "30"})

    _, error = await collect_until_error(backend)

    assert (error.status, error.retry_after) == (429, 30.0)


async def test_connection_cut_mid_stream_fails_after_the_first_text(upstream, backend):
    upstream.respond_events([text_event("partial"), text_event(" answer")], then="abort")

    texts, error = await collect_until_error(backend)

    assert texts == ["partial", " answer"]
    assert "upstream stream ended early" in error.message


async def test_clean_end_without_finish_reason_is_an_early_end(upstream, backend):
    upstream.respond_events([text_event("partial")])

    texts, error = await collect_until_error(backend)

    assert texts == ["partial"] and "finishReason" in error.message


async def test_refused_port_is_a_502(refused_url, closing):
    backend = closing(GeminiBackend(api_key="k", base_url=refused_url))

    _, error = await collect_until_error(backend)

    assert error.status == 502 and "cannot reach" in error.message
    # The upstream's address is for the operator's log only.
    assert refused_url not in error.message
    assert f"cannot reach upstream URL {refused_url}/v1beta" in error.detail


def test_safety_option_forms():
    assert safety_settings(None) is None and safety_settings("") is None
    assert {s["threshold"] for s in safety_settings("block_only_high")} == {"BLOCK_ONLY_HIGH"}
    with pytest.raises(ValueError, match="BLOCK_NONE"):
        safety_settings("block none")
    with pytest.raises(ValueError, match="JSON"):
        safety_settings("[not json")
    with pytest.raises(ValueError, match="category"):
        safety_settings('[{"threshold": "BLOCK_NONE"}]')


def test_constructor_checks_options():
    with pytest.raises(ValueError, match="--gemini-api-key"):
        GeminiBackend()
    GeminiBackend(base_url="http://127.0.0.1:9")  # a proxy may add the key itself
    assert BACKENDS["gemini"] is GeminiBackend
    assert GeminiBackend(api_key="k", model="gemini-2.5-flash").models() == ["gemini-2.5-flash"]
