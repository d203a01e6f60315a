"""``gprochat serve --backend openai|gemini`` with its flags, as a real process."""

from __future__ import annotations

import asyncio

from gprochat import GPROChat

from ...processes import clean_env, run_cli, served
from ..helpers import post, signed
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


# -- a GeminiProChat deployment's settings, unchanged ---------------------------------


def _without_backend(**extra: str) -> dict[str, str]:
    env = clean_env(**extra)
    del env["GPROCHAT_BACKEND"]  # auto, as a fresh install
    return env


async def _generate(base_url: str, *, secret: str, password: str) -> tuple[int, bytes]:
    status, _, body = await post(base_url, signed("Hello", secret=secret, password=password))
    return status, body


async def test_geminiprochat_variables_work_unchanged(upstream) -> None:
    """GEMINI_API_KEY (which picks the gemini backend, as in a GeminiProChat deployment),
    API_BASE_URL (with its trailing slash), GEMINI_MODEL_NAME, SITE_PASSWORD (a list),
    PUBLIC_SECRET_KEY."""
    upstream.respond_events(gemini_answer("Hi ", "from Gemini"))
    env = _without_backend(GEMINI_API_KEY="AIza-gpc", API_BASE_URL=upstream.url + "/",
                           GEMINI_MODEL_NAME="gemini-1.5-pro", SITE_PASSWORD="first,second",
                           PUBLIC_SECRET_KEY="gpc-secret")
    with served(env=env) as base_url:
        assert await _generate(base_url, secret="gpc-secret", password="second") == (200, b"Hi from Gemini")
        status, body = await _generate(base_url, secret="gpc-secret", password="third")
        assert status == 401 and b"Invalid password." in body
        status, body = await _generate(base_url, secret="not-the-secret", password="first")
        assert status == 401 and b"Invalid signature." in body
    (request,) = upstream.requests
    assert request.path == "/v1beta/models/gemini-1.5-pro:streamGenerateContent"
    assert request.headers["x-goog-api-key"] == "AIza-gpc"


async def test_env_file_beneath_the_environment_our_names_first_flags_over_all(upstream, tmp_path) -> None:
    upstream.respond_events(gemini_answer("From ", "the file"))
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        "# a GeminiProChat .env, with one of our names added\n"
        f"GEMINI_API_KEY=AIza-file\nAPI_BASE_URL={upstream.url}\n"
        "GEMINI_MODEL_NAME=gemini-theirs\nGPROCHAT_GEMINI_MODEL=gemini-ours\n"
        "SITE_PASSWORD=file-pw\nPUBLIC_SECRET_KEY='file secret'\n"
    )
    env = _without_backend(SITE_PASSWORD="real-pw")  # the real environment wins over the file
    with served("--env-file", str(dotenv), "--gemini-api-key", "AIza-flag", env=env) as base_url:
        assert await _generate(base_url, secret="file secret", password="real-pw") == (200, b"From the file")
        status, _ = await _generate(base_url, secret="file secret", password="file-pw")
        assert status == 401
    (request,) = upstream.requests
    assert request.path == "/v1beta/models/gemini-ours:streamGenerateContent"  # GPROCHAT_* first
    assert request.headers["x-goog-api-key"] == "AIza-flag"  # the command line over both


def test_a_missing_env_file_is_a_usage_error(tmp_path) -> None:
    result = run_cli("serve", "--env-file", str(tmp_path / ".env"))
    assert result.returncode == 2
    assert "Invalid value for '--env-file'" in result.stderr and "does not exist" in result.stderr
