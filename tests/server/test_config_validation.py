"""Every server setting is checked before the server starts; ``gprochat serve`` as an operator meets it."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import aiohttp
import pytest

from gprochat.server import ServerConfig
from gprochat.server.config import InvalidSettingError

from ..processes import ServeProcess, clean_env, run_cli
from .helpers import signed
from .test_shutdown_and_logs import LONG_TEXT, serve_process


@pytest.mark.parametrize(
    ("settings", "setting", "says"),
    [
        ({"port": 70000}, "port", "from 0 to 65535"),
        ({"port": -1}, "port", "at least 0"),
        ({"log_level": "loud"}, "log_level", "one of critical, error, warning, info, debug"),
        ({"log_format": "xml"}, "log_format", "'json' or 'text'"),
        ({"rate_limit": "lots"}, "rate_limit", "not a rate such as 60/minute"),
        ({"trusted_proxies": ("10.0.0.0/33",)}, "trusted_proxies", "not an IP address or network"),
        ({"redis_url": "localhost:6379"}, "redis_url", "redis://"),
        ({"redis_failure": "maybe"}, "redis_failure", "'open' or 'closed'"),
        ({"relay_url": "ftp://x"}, "relay_url", "http:// or https://"),
        ({"backend": "nope"}, "backend", "choose one of: auto, echo"),
        ({"workers": 0}, "workers", "at least 1"),
        ({"header_timeout": 0}, "header_timeout", "greater than 0"),
        ({"body_idle_timeout": -1}, "body_idle_timeout", "greater than 0"),
        ({"body_timeout": float("nan")}, "body_timeout", "a number of seconds"),
        ({"keepalive_timeout": "5"}, "keepalive_timeout", "a number of seconds"),
        ({"max_url_bytes": 0}, "max_url_bytes", "at least 1"),
        ({"max_header_count": 1.5}, "max_header_count", "a whole number"),
        ({"max_connections": -1}, "max_connections", "at least 0"),
        ({"max_streams": True}, "max_streams", "a whole number"),
        ({"timestamp_window": -1}, "timestamp_window", "at least 0"),
        ({"shutdown_timeout": -1}, "shutdown_timeout", "at least 0"),
        ({"host": " "}, "host", "address or host name"),
        ({"passwords": ("ok", "")}, "passwords", "non-empty strings"),
        ({"secret_key": ""}, "secret_key", "non-empty"),
        ({"replay_max_entries": -5}, "replay_max_entries", "at least 0"),
    ],
)
def test_a_wrong_setting_is_refused_naming_it(settings: dict[str, Any], setting: str, says: str) -> None:
    with pytest.raises(InvalidSettingError) as caught:
        ServerConfig(**settings)
    assert caught.value.setting == setting
    assert says in str(caught.value) and str(caught.value).startswith(f"{setting}: ")


def test_the_boundaries_are_accepted() -> None:
    config = ServerConfig(port=65535, max_streams=0, timestamp_window=0, shutdown_timeout=0,
                          max_connections=0, replay_max_entries=0, log_level="DEBUG", rate_limit=None)
    assert config.port == 65535 and config.log_level == "debug"
    proxies = ServerConfig(port=0, trusted_proxies=["10.0.0.0/8", "::1"]).trusted_proxies
    assert proxies == ("10.0.0.0/8", "::1")


def test_the_config_survives_the_trip_to_a_worker() -> None:
    config = ServerConfig(port=0, header_timeout=3.5, max_header_count=50, passwords=("a", "b"))
    assert ServerConfig.from_json(config.to_json()) == config


@pytest.mark.parametrize(
    ("args", "flag", "says"),
    [
        (["--port", "70000"], "--port", "from 0 to 65535"),
        (["--log-level", "loud"], "--log-level", "'loud' is not one of 'critical'"),
        (["--backend", "gemini", "--gemini-api-key", "k", "--gemini-safety", "WHATEVER"],
         "--gemini-safety", "is not one of BLOCK_NONE"),
        (["--backend", "gemini"], "--gemini-api-key", "needs an API key"),
        (["--rate-limit", "sixty"], "--rate-limit", "not a rate such as 60/minute"),
        (["--trusted-proxy", "proxy.local"], "--trusted-proxy", "not an IP address or network"),
        (["--relay-url", "relay.local"], "--relay-url", "http:// or https://"),
        (["--header-timeout", "0"], "--header-timeout", "x>0"),
        (["--backend", "nope"], "--backend", "'nope' is not one of 'auto', 'echo'"),
    ],
)
def test_serve_refuses_a_wrong_flag_with_exit_2_naming_it(args: list[str], flag: str, says: str) -> None:
    result = run_cli("serve", "--port", "0", *args)
    assert result.returncode == 2, result.stderr
    assert f"Invalid value for '{flag}'" in result.stderr and says in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_help_shows_environment_variables_and_choices() -> None:
    result = run_cli("serve", "--help")
    assert result.returncode == 0
    text = re.sub(r"\s+", " ", result.stdout)
    assert "[auto|echo|gemini|local|openai]" in text  # from the backend registry
    assert "[critical|error|warning|info|debug]" in text
    for variable in ("GPROCHAT_PORT", "GPROCHAT_HEADER_TIMEOUT", "GPROCHAT_MAX_CONNECTIONS",
                     "GPROCHAT_PASSWORD, GPROCHAT_SITE_PASSWORD", "GPROCHAT_LOG_LEVEL"):
        assert variable in text


@contextmanager
def serving(*args: str, env: dict[str, str] | None = None, started: str = "event") -> Iterator[Serving]:
    """``gprochat serve --port 0 ARGS`` until its start-up line; stopped afterwards."""
    with Serving(*args, env=env, ready="line") as server:
        assert started != "text" or server.text_port, server.output()
        yield server


class Serving(ServeProcess):
    """The shared ``ServeProcess``, with its start-up line as these tests read it."""

    @property
    def line(self) -> dict[str, Any]:
        """The JSON start-up line's fields."""
        return self.started

    @property
    def text_port(self) -> int:
        """The port of a text start-up line in its exact words; 0 if there is none."""
        match = re.search(r"INFO gprochat.server: gprochat \S+ serving on http://127.0.0.1:(\d+) "
                          r"\(echo backend, 1 worker, state in memory\)", self.output())
        return int(match.group(1)) if match else 0


def test_the_start_up_line_comes_after_binding_and_shows_the_real_port() -> None:
    with serving("--relay-url", "http://127.0.0.1:9/") as server:
        started = server.line
        assert started["port"] != 0 and started["host"] == "127.0.0.1"
        assert started["backend"] == "echo" and started["relay_url"] == "http://127.0.0.1:9/"
        assert started["level"] == "info" and started["logger"] == "gprochat.server"
        assert f"serving on http://127.0.0.1:{started['port']}" in started["message"]
        assert "gateway relays to http://127.0.0.1:9/" in started["message"]
        # Logged once listening: the port answers at once.
        with urllib.request.urlopen(started["url"] + "/healthz", timeout=10) as reply:
            assert reply.status == 200


def test_ctrl_c_after_a_clean_shutdown_exits_0() -> None:
    with serving() as server:
        assert server.stop(signal.SIGINT) == 0
        assert "Aborted" not in server.output() and "Traceback" not in server.output()


def test_the_start_up_line_is_text_when_logs_are_text() -> None:
    with serving("--log-format", "text", started="text") as server:
        assert server.text_port > 0


def test_a_port_in_use_is_one_clear_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = run_cli("serve", "--port", str(taken.getsockname()[1]))
    assert result.returncode == 1
    assert "cannot listen on 127.0.0.1:" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("variable", ["GPROCHAT_PASSWORD", "GPROCHAT_SITE_PASSWORD"])
def test_the_site_password_variable_is_the_clients_one_or_its_alias(variable: str) -> None:
    with serving(env=clean_env(**{variable: "pw-from-env"})) as server:
        url = server.line["url"] + "/api/generate"
        body = json.dumps(signed("Hi", password="wrong")).encode()
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=10)
        caught.value.close()
        assert caught.value.code == 401
        body = json.dumps(signed("Hi", password="pw-from-env")).encode()
        with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=10) as reply:
            assert reply.status == 200


async def test_sigterm_past_the_shutdown_timeout_logs_no_traceback() -> None:
    with serve_process("--echo-delay", "0.5", "--shutdown-timeout", "1") as server:
        async with aiohttp.ClientSession() as session:
            data = json.dumps(signed(LONG_TEXT)).encode()
            async with session.post(server.base_url + "/api/generate", data=data) as response:
                await response.content.readany()
                server.process.send_signal(signal.SIGTERM)
                with pytest.raises(aiohttp.ClientPayloadError):
                    async for _ in response.content.iter_any():
                        pass
        await asyncio.to_thread(server.process.wait, 20)
        output = server.output()
    assert "timeout graceful shutdown exceeded" in output  # one line says what happened
    assert "CancelledError" not in output and "Traceback" not in output


def test_worker_processes_get_the_http_limits_and_one_start_up_line() -> None:
    with serving("--workers", "2", "--max-url-bytes", "100") as server:
        url = server.line["url"]
        assert server.line["workers"] == 2
        deadline = time.monotonic() + 30
        while True:  # the workers start after the parent's line: wait for one to answer
            try:
                with urllib.request.urlopen(url + "/healthz", timeout=5) as reply:
                    assert reply.status == 200
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(url + "/healthz?" + "a" * 200, timeout=10)
        caught.value.close()
        assert caught.value.code == 414
        assert server.output().count('"event": "started"') == 1


def test_serve_flag_defaults_are_the_config_defaults() -> None:
    """A flag named as a ServerConfig field starts from the same default, or from none."""
    import dataclasses

    import click

    from gprochat.cli.serve import serve

    fields = {field.name: field for field in dataclasses.fields(ServerConfig)}
    differ = {}
    for param in serve.params:
        if not isinstance(param, click.Option) or param.name not in fields or param.name == "backend":
            continue  # backend: the command says "auto" (the local model when installed)
        field = fields[param.name]
        expected = (field.default if field.default is not dataclasses.MISSING
                    else field.default_factory())  # type: ignore[operator]
        given = param.get_default(click.Context(serve))
        unset = given is None or given is getattr(click.core, "UNSET", None)  # no flag default
        if not unset and given != expected:
            differ[param.name] = (given, expected)
    assert differ == {}


def test_the_config_and_its_limits_load_without_the_web_stack() -> None:
    """``ServerConfig``, ``HttpLimits`` and ``gprochat serve``'s options (whose defaults are
    the config's) import with uvicorn and starlette unavailable; the config is built
    with uvicorn unavailable."""
    code = """if True:
        import dataclasses, sys
        sys.modules["uvicorn"] = None  # importing it now raises ImportError
        sys.modules["starlette"] = None
        from gprochat.server.config import HttpLimits, ServerConfig
        from gprochat.cli.serve import serve
        from gprochat.cli import main
        defaults = {p.name: p.default for p in serve.params}
        assert defaults["header_timeout"] == HttpLimits.header_timeout == ServerConfig.header_timeout
        assert defaults["max_streams"] == ServerConfig.max_streams
        del sys.modules["starlette"]  # the trusted-proxy check uses the guard's parser
        config = ServerConfig(port=0, header_timeout=2.5, trusted_proxies=["10.0.0.0/8"])
        assert config.header_timeout == 2.5
        print("loaded", sorted(m for m in sys.modules if m.startswith("uvicorn") and sys.modules[m]))
    """
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "loaded []"
