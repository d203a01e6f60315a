"""The router's settings: ``[models]`` and ``[router]`` in ``serve --config``, checked with
errors that name the path at fault."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from gprochat.cli import main
from gprochat.server import ServerConfig
from gprochat.server.backends._router_config import (
    RouterSettingError,
    build_router,
    check_router_settings,
)
from gprochat.server.config import InvalidSettingError

from ...processes import clean_env


def models(*deployments: dict[str, Any], **model: Any) -> dict[str, Any]:
    return {"models": {"gemini-1.5-pro": {"deployments": list(deployments), **model}}}


GEMINI = {"backend": "gemini", "api-key": "AIza-0123456789abcdef"}


@pytest.mark.parametrize(
    ("data", "says"),
    [
        ({"models": {}}, "models: declare at least one model"),
        (models(), 'models."gemini-1.5-pro".deployments: declare at least one deployment'),
        (models(GEMINI, strategy="random"),
         'models."gemini-1.5-pro".strategy: must be one of failover, round-robin, least-busy'),
        (models({"backend": "gemni"}),
         'models."gemini-1.5-pro".deployments[0].backend: must be one of echo, gemini, local, '
         "openai, relay, not 'gemni'"),
        (models(GEMINI, GEMINI | {"rpm": 0}),
         'models."gemini-1.5-pro".deployments[1].rpm: must be a whole number of at least 1, not 0'),
        (models(GEMINI | {"max-concurrency": "8"}),
         "deployments[0].max-concurrency: must be a whole number of at least 1, not '8'"),
        (models(GEMINI | {"base-ur": "http://x"}),
         "deployments[0].base-ur: the gemini backend has no such option; it takes: name, api-key, "
         "api-keys, api-version, base-url,"),
        (models({"backend": "echo", "api-key": "k"}),
         "deployments[0].api-keys: the echo backend takes no API key"),
        (models({"backend": "gemini", "api-keys": ["k", "k"]}), "deployments[0].api-keys: lists a key twice"),
        (models(GEMINI, GEMINI | {"name": "gemini-1.5-pro[0]"}),
         "deployments[1].name: 'gemini-1.5-pro[0]' names another deployment too"),
        (models(GEMINI) | {"router": {"default-model": "gpt"}},
         "router.default-model: 'gpt' is not a declared model"),
        (models(GEMINI) | {"router": {"cooldown": 60, "max-cooldown": 30}},
         "router.max-cooldown: must be at least cooldown (60), not 30"),
        (models(GEMINI) | {"router": {"cooldwn": 60}}, "router.cooldwn: unknown key"),
        (models(GEMINI | {"first-text-timeout": 0}),
         "deployments[0].first-text-timeout: must be a number of seconds greater than 0, not 0"),
    ],
)
def test_a_wrong_setting_names_its_path(data: dict[str, Any], says: str) -> None:
    with pytest.raises(RouterSettingError) as info:
        check_router_settings(data)
    assert says in str(info.value)
    with pytest.raises(InvalidSettingError) as caught:
        ServerConfig(router=data)
    assert caught.value.setting == "router" and says in str(caught.value)


async def test_a_backend_option_refused_by_the_backend_names_the_deployment() -> None:
    with pytest.raises(RouterSettingError) as info:
        build_router(models(GEMINI, {"backend": "gemini", "base-url": "ftp://x", "api-key": "k"}))
    assert str(info.value).startswith('models."gemini-1.5-pro".deployments[1].base-url: gemini '
                                      "backend: Gemini API base URL must be http(s)://")


async def test_keys_become_one_backend_each_and_the_upstream_model_defaults_to_the_name() -> None:
    router = build_router(models({"backend": "gemini", "api-keys": ["k1", "k2", "k3"]},
                                 {"backend": "gemini", "api-key": "k", "model": "gemini-2.0-flash"},
                                 strategy="round-robin"))
    try:
        first, second = router.routed["gemini-1.5-pro"].deployments
        assert [key.backend.model for key in first.keys] == ["gemini-1.5-pro"] * 3  # type: ignore[attr-defined]
        assert [key.label for key in first.keys] == ["key #1", "key #2", "key #3"]
        assert second.keys[0].backend.model == "gemini-2.0-flash"  # type: ignore[attr-defined]
        assert router.routed["gemini-1.5-pro"].strategy == "round-robin"
        assert router.models() == ["gemini-1.5-pro"]
    finally:
        await router.aclose()


def test_serve_refuses_a_wrong_router_setting_naming_the_file_and_the_path(tmp_path: Path) -> None:
    path = tmp_path / "gprochat.toml"
    path.write_text('[models."gemini-1.5-pro"]\n[[models."gemini-1.5-pro".deployments]]\n'
                    'backend = "gemini"\napi-keys = ["k1", "k2"]\nrpm = -5\n')
    result = CliRunner().invoke(main, ["serve", "--config", str(path)], env=clean_env())
    assert result.exit_code == 2, result.output
    assert (f'{path}: models."gemini-1.5-pro".deployments[0].rpm: must be a whole number of at '
            "least 1, not -5") in " ".join(result.output.split())


def test_router_settings_without_models_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "gprochat.toml"
    path.write_text("[router]\ncooldown = 5\n")
    result = CliRunner().invoke(main, ["serve", "--config", str(path)], env=clean_env())
    assert result.exit_code == 2 and "[router] settings need [models]" in result.output


def test_a_relay_url_and_models_together_are_refused() -> None:
    with pytest.raises(InvalidSettingError) as info:
        ServerConfig(router=models(GEMINI), relay_url="https://chat.example.org")
    assert info.value.setting == "relay_url" and 'backend = "relay"' in str(info.value)


def test_the_router_settings_reach_worker_processes() -> None:
    config = ServerConfig(router=models(GEMINI, {"backend": "echo"}) | {"router": {"cooldown": 5}})
    assert ServerConfig.from_json(config.to_json()).router == config.router
