"""``gprochat serve --backend openai|gemini`` with its flags, as a real process."""

from __future__ import annotations

import asyncio

from gprochat import GPROChat

from ...processes import clean_env, run_cli, served
from .test_gemini import answer as gemini_answer
from .test_openai import answer as openai_answer

HELLO = [{"role": "user", "content": "Hello"}]


async def test_openai_flags_reach_the_backend(upstream) -> None:
    upstream.respond_events(openai_answer("Hi ", "there"))
    with served("--backend", "openai", "--openai-base-url", upstream.url + "/v1",
                "--openai-api-key", "sk-flag", "--openai-model", "llama3") as base_url:
        text = await GPROChat.create_async("", HELLO, base_url=base_url)
    assert text == "Hi there"
    request = upstream.requests[0]
    assert request.headers["Authorization"] == "Bearer sk-flag"
    assert request.json["model"] == "llama3"


async def test_gemini_settings_from_the_environment(upstream) -> None:
    upstream.respond_events(gemini_answer("Knock ", "knock"))
    env = clean_env(
        GPROCHAT_BACKEND="gemini",
        GPROCHAT_GEMINI_API_KEY="AIza-env",
        GPROCHAT_GEMINI_BASE_URL=upstream.url,
        GPROCHAT_GEMINI_MODEL="gemini-1.5-pro",
        GPROCHAT_GEMINI_SAFETY="BLOCK_ONLY_HIGH",
    )
    with served(env=env) as base_url:
        text = await GPROChat.create_async("", HELLO, base_url=base_url)
    assert text == "Knock knock"
    request = upstream.requests[0]
    assert request.path == "/v1beta/models/gemini-1.5-pro:streamGenerateContent"
    assert request.headers["x-goog-api-key"] == "AIza-env"
    assert {s["threshold"] for s in request.json["safetySettings"]} == {"BLOCK_ONLY_HIGH"}


async def test_missing_api_key_is_a_usage_error() -> None:
    result = await asyncio.to_thread(run_cli, "serve", "--backend", "gemini")
    assert result.returncode == 2
    assert "--gemini-api-key" in result.stderr and "Traceback" not in result.stderr
