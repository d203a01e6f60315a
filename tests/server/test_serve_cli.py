"""``gprochat serve``: its flags, environment variables, --help, --config and --env-file."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from pathlib import Path

import click
import click.testing
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


# -- --help: options in sections, each described, defaults that read as values -----

SECTIONS = [
    "Server", "Backend local", "Backend openai", "Backend gemini", "Backend echo", "Relay",
    "Limits", "HTTP", "Scale-out", "Logging", "Other options",
]


def _help(*args: str) -> str:
    from click.testing import CliRunner

    from gprochat.cli import main

    result = CliRunner().invoke(main, [*args, "--help"], terminal_width=100)
    assert result.exit_code == 0, result.output
    return result.output


def _sections(text: str) -> dict[str, str]:
    """Heading (up to its colon) -> the text under it."""
    _, *parts = re.split(r"^(\S[^\n]*):\n", text, flags=re.MULTILINE)
    return {heading.split(":")[0]: body for heading, body in zip(parts[::2], parts[1::2], strict=True)}


def test_serve_help_lists_the_options_in_sections_default_backend_first() -> None:
    from gprochat.cli.serve import serve

    text = _help("serve")
    sections = _sections(text)
    assert list(sections) == SECTIONS
    where = {
        "--host": "Server", "--config": "Server", "--env-file": "Server", "--model-path": "Backend local",
        "--openai-model": "Backend openai", "--gemini-api-key": "Backend gemini",
        "--echo-delay": "Backend echo", "--relay-url": "Relay", "--rate-limit": "Limits",
        "--header-timeout": "HTTP", "--redis-url": "Scale-out", "--log-level": "Logging",
        "--help": "Other options",
    }
    for flag, heading in where.items():
        assert re.search(rf"^\s+(-\w, )?{flag}\b", sections[heading], re.MULTILINE), (flag, heading)
    # Every option is listed once, in one section (an option's line is indented a little;
    # a help text wrapped onto a line that starts with a flag's name is indented far more).
    for param in serve.params:
        flag = param.opts[0]
        listed = [h for h, body in sections.items()
                  if re.search(rf"^ {{1,6}}(-\w, )?{flag}[\s,/]", body, re.MULTILINE)]
        assert len(listed) == 1, (flag, listed)


def test_every_serve_option_is_described_and_its_default_reads_as_a_value() -> None:
    from gprochat.cli.serve import serve

    undescribed = [p.opts[0] for p in serve.params if isinstance(p, click.Option) and not p.help]
    assert undescribed == []
    text = " ".join(_help("serve").split())
    assert "--web / --no-web Serve the chat page at /. [env var: GPROCHAT_WEB; default: on]" in text
    assert "--gateway / --no-gateway Serve the OpenAI-compatible gateway at /v1." in text
    assert "default: gateway" not in text and "default: web" not in text and "default: (" not in text
    assert "--host TEXT Address to listen on" in text
    assert "[env var: GPROCHAT_MAX_BODY_BYTES; default: 16 MiB; x>=0]" in text
    assert "[env var: GPROCHAT_PORT; default: 8000]" in text


def test_the_documented_backend_defaults_are_the_backends_own() -> None:
    """The backend flags have no default of their own (the backend's applies): what
    --help shows must be what the backend uses."""
    import inspect

    from gprochat.cli.serve import _BACKEND_FLAGS, serve
    from gprochat.server.backends import BACKENDS

    params = {p.name: p for p in serve.params}
    checked = 0
    for backend, flags in _BACKEND_FLAGS.items():
        signature = inspect.signature(BACKENDS[backend]).parameters
        for flag, option in flags.items():
            shown, default = params[flag].show_default, signature[option].default
            if isinstance(default, (str, int, float)) and not isinstance(default, bool):
                assert shown == str(default) or (shown == "0" and default == 0), (flag, shown, default)
                checked += 1
    assert checked >= 12


def test_gprochat_help_shows_each_command_s_first_sentence_whole() -> None:
    from gprochat.cli import main

    text = " ".join(_help().split("Commands:")[1].split())
    assert "..." not in text
    for command in main.commands.values():
        first = " ".join(re.split(r"\.\s", command.help or "")[0].split())
        assert first and first in text, first


# -- --config FILE -----------------------------------------------------------------


def _serve_with(tmp_path: Path, toml: str, *args: str) -> click.testing.Result:
    """``gprochat serve --config FILE ARGS`` in this process: for refusals only (exit 2
    comes before any port is bound)."""
    from click.testing import CliRunner

    from gprochat.cli import main

    path = tmp_path / "gprochat.toml"
    path.write_text(toml)
    return CliRunner().invoke(main, ["serve", "--config", str(path), *args], env=clean_env())


@pytest.mark.parametrize(
    ("toml", "says"),
    [
        ("prot = 8080", "unknown key 'prot'; the nearest setting is 'port'"),
        ("max_body_byte = 10", "unknown key 'max_body_byte'; the nearest setting is 'max-body-bytes'"),
        ("[server]\nport = 1", "unknown key 'server'"),
        ('port = "8080"', "'port' must be an integer, not str '8080'"),
        ("timestamp-window = true", "'timestamp-window' must be a number, not bool True"),
        ('web = "no"', "'web' must be true or false, not str 'no'"),
        ("trusted-proxy = 10", "'trusted-proxy' must be a string or a list of strings, not int 10"),
        ("log-level = 3", "'log-level' must be a string: 'critical', 'error'"),
        ("max-streams = -1", "'max-streams': -1 is not in the range x>=0"),
        ('redis-failure = "maybe"', "'redis-failure': 'maybe' is not one of 'open', 'closed'"),
        ("port = 1\nport = 2", "not valid TOML"),
        ("max-streams = 1\nmax_streams = 2", "'max_streams' is given twice"),
        ('config = "other.toml"', "'config' is a command-line option only"),
        ('[models.fast]\nbackend = "gemini"', "models.fast.backend: unknown key; use one of: "
                                              "strategy, deployments"),
    ],
)
def test_a_wrong_config_file_is_a_usage_error_naming_the_key(tmp_path: Path, toml: str, says: str) -> None:
    result = _serve_with(tmp_path, toml)
    assert result.exit_code == 2, result.output
    assert f"Error: {tmp_path / 'gprochat.toml'}: " in result.output
    assert says in " ".join(result.output.split())


def test_a_wrong_value_from_the_file_names_the_option_and_the_file(tmp_path: Path) -> None:
    result = _serve_with(tmp_path, 'rate-limit = "sixty"')
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert (f"Invalid value for '--rate-limit' (set in {tmp_path / 'gprochat.toml'}): 'sixty' is not "
            "a rate such as 60/minute") in text


def test_a_missing_config_file_says_so(tmp_path: Path) -> None:
    result = run_cli("serve", "--config", str(tmp_path / "nowhere.toml"))
    assert result.returncode == 2
    assert "nowhere.toml: cannot read it: No such file or directory" in result.stderr


async def test_the_file_sets_what_the_environment_and_the_command_line_do_not(tmp_path: Path) -> None:
    """Every level in one server: the file's max-message-chars holds; the environment's
    secret key beats the file's; the command line's password beats the file's and the
    environment's."""
    config = tmp_path / "gprochat.toml"
    config.write_text(
        'secret-key = "file-key"\npassword = "file-pw"\nmax-message-chars = 10\n'
        'max_messages = 1\ntrusted-proxy = ["10.0.0.0/8"]\nweb = false\n'
    )
    env = clean_env(GPROCHAT_SECRET_KEY="env-key", GPROCHAT_PASSWORD="env-pw")
    with served("--config", str(config), "--password", "cli-pw", env=env) as base_url:
        status, _, _ = await post(base_url, signed("x" * 11, secret="env-key", password="cli-pw"))
        assert status == 413
        status, _, body = await post(base_url, signed("Hi", secret="env-key", password="cli-pw"))
        assert status == 200 and body.endswith(b"Hi")
        status, _, body = await post(base_url, signed("Hi", secret="file-key", password="cli-pw"))
        assert status == 401 and b"Invalid signature." in body
        for password in ("env-pw", "file-pw"):
            status, _, body = await post(base_url, signed("Hi", secret="env-key", password=password))
            assert status == 401 and b"Invalid password." in body
        history = [{"role": "user", "parts": [{"text": "a"}]}, {"role": "model", "parts": [{"text": "b"}]}]
        status, _, body = await post(base_url, signed("Hi", secret="env-key", password="cli-pw",
                                                      history=history))
        assert status == 413 and b"messages" in body  # max_messages = 1, written with underscores
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(base_url + "/", timeout=10)  # web = false: no chat page
        caught.value.close()
        assert caught.value.code == 404


def test_the_readme_table_has_every_serve_option_and_its_variables() -> None:
    from gprochat.cli.serve import serve

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in readme.splitlines() if line.startswith("| `--")}
    missing = []
    for param in serve.params:
        assert isinstance(param, click.Option)
        row = next((line for key, line in rows.items() if key.startswith(f"`{param.opts[0]}")), None)
        envvars = [param.envvar] if isinstance(param.envvar, str) else list(param.envvar or ())
        if row is None or not all(f"`{name}`" in row for name in envvars):
            missing.append(param.opts[0])
    assert missing == []


async def test_gateway_keys_from_the_variable_replace_the_file_s(tmp_path: Path) -> None:
    config = tmp_path / "gprochat.toml"
    config.write_text('api-key = "file-key"\n')
    body = {"model": "echo", "messages": [{"role": "user", "content": "Hi"}]}

    async def status(base_url: str, key: str) -> int:
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        code, _, _ = await post(base_url, json.dumps(body).encode(), path="/v1/chat/completions",
                                headers=headers)
        return code

    with served("--config", str(config), env=clean_env(GPROCHAT_API_KEYS="k1, k2")) as base_url:
        assert [await status(base_url, key) for key in ("k1", "k2", "file-key")] == [200, 200, 401]
    with served("--config", str(config)) as base_url:
        assert [await status(base_url, key) for key in ("file-key", "k1")] == [200, 401]


async def test_image_limits_come_from_the_flags_the_environment_and_the_file(tmp_path: Path) -> None:
    """--max-images on the command line beats GPROCHAT_MAX_IMAGES; the file's
    max-image-bytes holds; each refusal names its limit and its option."""
    from .helpers import error_message, image_part, png

    config = tmp_path / "gprochat.toml"
    config.write_text("max-image-bytes = 1000\n")
    env = clean_env(GPROCHAT_MAX_IMAGES="5", GPROCHAT_LOG_LEVEL="warning")
    with served("--config", str(config), "--max-images", "2", env=env) as base_url:
        status, _, body = await post(base_url, signed("Hi", images=[image_part(png(1000))] * 2))
        assert status == 200 and body.count(b"[image ") == 2
        status, _, body = await post(base_url, signed("Hi", images=[image_part(png(100))] * 3))
        assert status == 413
        assert "Too many images: 3; this server accepts at most 2" in error_message(body)
        assert "--max-images" in error_message(body)
        status, _, body = await post(base_url, signed("Hi", images=[image_part(png(1001))]))
        assert status == 413
        assert "1001 bytes, over the limit of 1000 bytes" in error_message(body)
        assert "--max-image-bytes" in error_message(body)


@pytest.mark.parametrize(
    ("flag", "says"),
    [
        ("--model-path", "model file '{path}' is not a GGUF model"),
        ("--mmproj", "projector file '{path}' is not a GGUF file"),
    ],
)
def test_a_bad_model_file_names_its_own_flag(tmp_path: Path, flag: str, says: str) -> None:
    from gprochat.cli import main

    path = tmp_path / "photo.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    result = click.testing.CliRunner().invoke(
        main, ["serve", "--backend", "local", flag, str(path)], env=clean_env())
    assert result.exit_code == 2
    assert f"Invalid value for '{flag}'" in result.output
    assert says.format(path=path) in result.output
