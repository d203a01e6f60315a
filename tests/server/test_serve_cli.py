"""``gprochat serve``'s guard flags and environment variables, as a real process."""

from __future__ import annotations

import pytest

from ..processes import clean_env, run_cli, served
from .helpers import post, signed


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--rate-limit", "lots"], "'lots' is not a rate such as 60/minute"),
        (["--trusted-proxy", "not-an-ip"], "is not an IP address or network"),
        (["--redis-url", "localhost:6379"], "must start with redis://"),
        (["--redis-failure", "maybe"], "'maybe' is not one of 'open', 'closed'"),
    ],
)
def test_bad_serve_options_exit_2_with_a_clear_message(args: list[str], expected: str) -> None:
    result = run_cli("serve", *args)
    assert result.returncode == 2
    assert expected in result.stderr


async def test_guard_settings_come_from_environment_variables() -> None:
    env = clean_env(GPROCHAT_RATE_LIMIT="2/minute", GPROCHAT_TIMESTAMP_WINDOW="60",
                    GPROCHAT_MAX_MESSAGE_CHARS="10", GPROCHAT_LOG_LEVEL="warning")
    with served(env=env) as base_url:
        status, _, _ = await post(base_url, signed("x" * 11))
        assert status == 413
        stale = signed("Hi", timestamp=signed()["time"] - 120_000)
        status, _, _ = await post(base_url, stale)
        assert status == 401
        status, headers, _ = await post(base_url, signed("Hi"))
        assert status == 429 and "Retry-After" in headers


def test_serve_with_a_password_locks_the_gateway_too() -> None:
    """``gprochat serve --secret-key K --password P`` used to leave /v1 open to anyone."""
    import openai

    with served("--secret-key", "K", "--password", "P", env=clean_env()) as base_url:
        def client(key: str) -> openai.OpenAI:
            return openai.OpenAI(base_url=base_url + "/v1", api_key=key, max_retries=0, timeout=30)

        hello = [{"role": "user", "content": "Hi"}]
        with pytest.raises(openai.AuthenticationError):
            client("anything").chat.completions.create(model="echo", messages=hello)  # type: ignore[arg-type]
        answer = client("P").chat.completions.create(model="echo", messages=hello)  # type: ignore[arg-type]
        assert answer.choices[0].message.content.endswith("Hi")  # type: ignore[union-attr]
