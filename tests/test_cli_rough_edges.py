"""Issue 12's rough edges, each over real sockets: the CLI as a process, the provider in-process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gprochat import ConfigurationError, GPROChat, ProtocolError, ServerError
from gprochat.server import ServerConfig

from .conftest import ServerFactory
from .processes import clean_env, free_port, run_cli
from .scripted import LAST_CHUNK, RecordedRequest, ScriptedServer, chunk, full_response, head

HI = [{"role": "user", "content": "Hi"}]


async def run_cli_async(*args: str, stdin: bytes = b"") -> tuple[int, str, str]:
    """``gprochat ARGS`` while this test's event loop keeps serving a scripted server."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gprochat", *args, env=clean_env(),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(stdin), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def answering(*responses: bytes):  # type: ignore[no-untyped-def]
    """A script giving the raw responses in turn, then a good answer "fine"."""

    async def script(request: RecordedRequest, writer: asyncio.StreamWriter) -> None:
        index = len(script.seen)  # type: ignore[attr-defined]
        script.seen.append(request)  # type: ignore[attr-defined]
        writer.write(responses[index] if index < len(responses) else head() + chunk(b"fine") + LAST_CHUNK)

    script.seen = []  # type: ignore[attr-defined]
    return script


# -- input that is not UTF-8 ------------------------------------------------------------


def test_stdin_that_is_not_utf8_is_repaired_with_one_warning() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gprochat", "chat", "--local"], input=b"caf\xe9",
        capture_output=True, env=clean_env(), timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "caf\N{REPLACEMENT CHARACTER}" in result.stdout.decode()
    stderr = result.stderr.decode()
    assert stderr.startswith("Warning: standard input is not UTF-8") and len(stderr.splitlines()) == 1
    assert "Traceback" not in stderr


def test_an_argument_with_undecodable_bytes_is_repaired() -> None:
    result = subprocess.run(
        [os.fsencode(sys.executable), b"-m", b"gprochat", b"chat", b"--local", b"caf\xe9"],
        capture_output=True, env=clean_env(LC_ALL="C.UTF-8"), stdin=subprocess.DEVNULL, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "caf\N{REPLACEMENT CHARACTER}" in result.stdout.decode()
    assert b"Warning: the prompt is not valid UTF-8" in result.stderr
    assert b"Traceback" not in result.stderr


async def test_the_provider_refuses_a_lone_surrogate_before_sending() -> None:
    async with ScriptedServer(answering()) as server:
        with pytest.raises(ProtocolError, match="cannot be sent as UTF-8") as caught:
            await GPROChat.create_async(
                "", [{"role": "user", "content": "caf\udce9"}], base_url=server.base_url
            )
        assert not isinstance(caught.value, UnicodeError)
        assert server.requests == []


# -- URLs ----------------------------------------------------------------------------


def test_a_base_url_without_a_scheme_says_so() -> None:
    result = run_cli("chat", "--base-url", "127.0.0.1:8000", "Hi")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "Error: base_url='127.0.0.1:8000' is not an http:// or https:// URL: "
        "write the scheme too, e.g. http://127.0.0.1:8000"
    )


def test_a_base_url_that_is_an_option_says_so(tmp_path: Path) -> None:
    # `--base-url` followed by another option took it as its value: no "http://-a" hint.
    (tmp_path / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    result = run_cli("chat", "--no-log", "--base-url", "-a", str(tmp_path / "photo.png"), "Hi")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "Error: base_url='-a' is an option, not a URL: give the deployment's URL right "
        "after it, e.g. http://127.0.0.1:8000"
    )


@pytest.mark.parametrize("url", ["http://127.0.0.1:99999", "http://a..b", "http://[::1"])
async def test_an_invalid_url_is_a_configuration_error_and_not_retried(url: str) -> None:
    with pytest.raises(ConfigurationError, match="Invalid URL") as caught:
        await GPROChat.create_async("", HI, base_url=url, max_retries=3)
    assert caught.value.attempts == 1


async def test_a_502_the_server_calls_its_configuration_error_is_not_retried(
    make_server: ServerFactory,
) -> None:
    upstream_calls = 0

    async def refuse_key(request: RecordedRequest, writer: asyncio.StreamWriter) -> None:
        nonlocal upstream_calls
        upstream_calls += 1
        body = json.dumps({"error": {"message": "Incorrect API key provided"}}).encode()
        writer.write(full_response(401, body, {"Content-Type": "application/json"}))

    async with ScriptedServer(refuse_key) as upstream:
        # Our own server, its openai backend pointed at an upstream refusing the key.
        server = make_server(ServerConfig(
            backend="openai", backend_options={"base_url": upstream.base_url + "/v1", "api_key": "bad"}
        ))
        with pytest.raises(ServerError, match="configuration error") as caught:
            await GPROChat.create_async("", HI, base_url=server.base_url, max_retries=3)
    assert caught.value.status_code == 502
    assert caught.value.attempts == 1
    assert upstream_calls == 1


async def test_a_plain_502_is_still_retried() -> None:
    bad_gateway = full_response(502, b'{"error": {"message": "upstream hiccup"}}')
    async with ScriptedServer(answering(bad_gateway)) as server:
        assert await GPROChat.create_async("", HI, base_url=server.base_url, max_retries=1) == "fine"
        assert len(server.requests) == 2


async def test_a_retry_after_wait_is_shown_on_stderr() -> None:
    busy = full_response(429, b'{"error": {"message": "slow down"}}', {"Retry-After": "2"})
    async with ScriptedServer(answering(busy)) as server:
        code, out, err = await run_cli_async("chat", "--base-url", server.base_url, "Hi")
    assert code == 0, err
    assert out == "fine\n"
    assert "gprochat: " in err and "retrying in 2.0s" in err and "Retry-After: 2" in err
    assert "slow down" in err


async def test_max_retries_zero_on_the_command_line() -> None:
    busy = full_response(503, b'{"error": {"message": "busy"}}')
    async with ScriptedServer(answering(busy)) as server:
        code, _, err = await run_cli_async("chat", "--base-url", server.base_url, "--max-retries", "0", "Hi")
        assert len(server.requests) == 1
    assert code == 1
    assert err.startswith("Error: ") and "503" in err and "retrying" not in err


# -- error bodies ------------------------------------------------------------------------


async def test_an_html_error_page_becomes_one_readable_line() -> None:
    page = (
        b"<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title>"
        b"<style>body { color: red }</style></head>\n<body>\n<center><h1>502 Bad Gateway</h1></center>\n"
        + b"<p>" + b"padding " * 2000 + b"</p>\n<hr><center>nginx</center>\n</body></html>\n"
    )
    response = full_response(502, page, {"Content-Type": "text/html"})
    async with ScriptedServer(answering(response, response)) as server:
        url = server.base_url + "/api/generate"
        code, _, err = await run_cli_async("chat", "--base-url", server.base_url, "--max-retries", "0", "Hi")
        with pytest.raises(ServerError) as caught:
            await GPROChat.create_async("", HI, base_url=server.base_url, max_retries=0)
    assert code == 1
    assert err.strip().splitlines() == [f"Error: {url} answered 502: 502 Bad Gateway"]
    assert caught.value.server_message == "502 Bad Gateway"
    assert caught.value.body == page.decode()  # the whole page is still there for whoever wants it


async def test_a_long_plain_error_is_cut_to_one_line() -> None:
    text = ("line one\n" + "x" * 1000).encode()
    async with ScriptedServer(answering(full_response(400, text))) as server:
        with pytest.raises(Exception) as caught:
            await GPROChat.create_async("", HI, base_url=server.base_url)
    message = str(caught.value)
    assert "\n" not in message and message.endswith("…") and len(message) < 300


# -- what is sent ---------------------------------------------------------------------


async def test_system_goes_as_native_turns_and_flatten_is_a_choice() -> None:
    async with ScriptedServer(answering()) as server:
        code, _, err = await run_cli_async(
            "chat", "--base-url", server.base_url, "--system", "Be terse.", "Hi"
        )
        assert code == 0, err
        code, _, err = await run_cli_async(
            "chat", "--base-url", server.base_url, "--system", "Be terse.", "--history", "flatten", "Hi"
        )
        assert code == 0, err
    native, flat = (request.json()["messages"] for request in server.requests)
    # As Client sends it: the system prompt in front of the user's turn, no "User:" labels.
    assert native == [{"role": "user", "parts": [{"text": "Be terse.\n\nHi"}]}]
    assert flat == [{"role": "user", "parts": [{"text": "System: Be terse.\nUser: Hi\nAssistant:"}]}]


def test_stdin_and_a_prompt_are_combined_stdin_first() -> None:
    result = run_cli("chat", "--local", "summarise", "this", input="some context\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().endswith("some context\n\nsummarise this")


def test_multi_word_prompt_without_quotes() -> None:
    result = run_cli("chat", "--local", "hello", "big", "world")
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().endswith(": hello big world")


# -- chat's options -----------------------------------------------------------------------


async def test_timeout_option_limits_the_wait() -> None:
    async def stall(request: RecordedRequest, writer: asyncio.StreamWriter) -> None:
        writer.write(head())
        await writer.drain()
        await asyncio.sleep(30)

    async with ScriptedServer(stall) as server:
        code, _, err = await run_cli_async(
            "chat", "--base-url", server.base_url, "--timeout", "0.5", "--max-retries", "0", "Hi"
        )
    assert code == 1
    assert err.startswith("Error: read timeout: no data for 0.5s")


def test_no_stream_and_json() -> None:
    whole = run_cli("chat", "--local", "--no-stream", "all at once")
    assert whole.returncode == 0, whole.stderr
    assert whole.stdout.endswith(": all at once\n")

    result = run_cli("chat", "--local", "--json", "as json")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["prompt"] == "as json"
    assert record["answer"].endswith(": as json")
    # The bundled server's backend answered, whatever the protocol's model name: it is logged.
    assert record["deployment"] == "local" and record["model"] == "echo"
    assert record["incomplete"] is False and record["error"] is None
    assert isinstance(record["id"], int) and len(record["conversation_id"]) == 12


def test_models_command() -> None:
    text = run_cli("models")
    assert text.returncode == 0
    assert text.stdout.splitlines() == ["gemini-1.5-pro  (default)", "gemini-pro  (alias of gemini-1.5-pro)"]
    data = json.loads(run_cli("models", "--json").stdout)
    assert data == {"default": "gemini-1.5-pro", "models": ["gemini-1.5-pro"],
                    "aliases": {"gemini-pro": "gemini-1.5-pro"}}


def test_python_dash_m_gprochat() -> None:
    result = subprocess.run([sys.executable, "-m", "gprochat", "chat", "--local", "via -m"],
                            capture_output=True, text=True, env=clean_env(), timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().endswith(": via -m")
    usage = subprocess.run([sys.executable, "-m", "gprochat", "--help"], capture_output=True, text=True)
    assert "Usage: gprochat" in usage.stdout and "logs" in usage.stdout and "models" in usage.stdout


def test_help_names_the_environment_variables() -> None:
    result = run_cli("chat", "--help")
    for name in ("GPROCHAT_BASE_URL", "GPROCHAT_SECRET_KEY", "GPROCHAT_PASSWORD", "GPROCHAT_PROXY"):
        assert f"env var: {name}" in " ".join(result.stdout.split())
    assert "[native|flatten]" in result.stdout


def test_usage_errors() -> None:
    result = run_cli("chat", "--no-log", "-c", "Hi")
    assert result.returncode == 2 and "drop --no-log" in result.stderr
    result = run_cli("chat", "--local", "--cid", "nope", "Hi")
    assert result.returncode == 2 and "no conversation 'nope'" in result.stderr
    result = run_cli("chat", "--local", "-c", "Hi")
    assert result.returncode == 1 and "no conversation to continue" in result.stderr
    result = run_cli("chat", "--base-url", f"http://127.0.0.1:{free_port()}", "--max-retries", "0", "  ")
    assert result.returncode == 2 and "the prompt is empty" in result.stderr


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("GPROCHAT_BACKEND", "bogus",
         "Error: GPROCHAT_BACKEND='bogus': chat --local runs the local model or echo"),
        ("GPROCHAT_N_CTX", "lots", "Error: GPROCHAT_N_CTX='lots' is not an integer"),
        ("GPROCHAT_TEMPERATURE", "warm", "Error: GPROCHAT_TEMPERATURE='warm' is not a number"),
    ],
)
def test_chat_local_refuses_a_bad_setting_in_one_line(variable: str, value: str, message: str) -> None:
    env = clean_env(**{"GPROCHAT_BACKEND": "auto", variable: value})
    result = run_cli("chat", "--local", "Hi", env=env)
    assert result.returncode == 2
    assert result.stderr.startswith(message)
    assert "Traceback" not in result.stderr and result.stdout == ""


def _wait_until_reading_stdin(pid: int, timeout: float = 120) -> None:
    """Wait for the event, not a guessed delay: the process blocked in read(0, ...).

    /proc/PID/syscall names the system call a sleeping process is in (read is 0 on
    x86_64, 63 on aarch64) and its first argument (the file descriptor).
    """
    read_numbers = {"0", "63"} if os.uname().machine in ("x86_64", "aarch64") else set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            fields = Path(f"/proc/{pid}/syscall").read_text().split()
        except OSError:
            fields = []
        if not read_numbers or (len(fields) > 1 and fields[0] in read_numbers and fields[1] == "0x0"):
            if not read_numbers:
                time.sleep(5)  # no way to see the call here: fall back to a generous delay
            return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} never blocked reading standard input")


def test_ctrl_c_before_the_answer_starts_is_a_clean_exit_130(tmp_path: Path) -> None:
    """Here while standard input is still being read (a pipe that has not ended): one
    line and status 130, as Ctrl-C during an answer gives, not click's 'Aborted!' and 1."""
    process = subprocess.Popen(
        [sys.executable, "-m", "gprochat", "chat", "--local", "summarise"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=clean_env(GPROCHAT_HOME=str(tmp_path)), text=True,
    )
    try:
        _wait_until_reading_stdin(process.pid)  # the pipe stays open: it blocks there
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
        assert process.stdin is not None
        process.stdin.close()
    assert process.returncode == 130
    assert err == "Error: interrupted\n" and out == ""


def test_an_unreachable_default_deployment_points_to_base_url_and_local(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """gprochat.com is gone: with no deployment chosen and no local model, chat fails at
    once (no request, no retry) saying what to use instead."""
    from click.testing import CliRunner

    from gprochat.cli import main

    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens: refused, like a dead site
    monkeypatch.setattr(GPROChat, "api_endpoint", closed + "/api/generate")
    for name in ("GPROCHAT_BASE_URL", "GPROCHAT_DEPLOYMENTS", "GPROCHAT_BACKEND"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GPROCHAT_MODEL_PATH", str(tmp_path / "no-such-model.gguf"))
    monkeypatch.setenv("GPROCHAT_HOME", str(tmp_path))
    runner = CliRunner()
    default = runner.invoke(main, ["chat", "Hi"])
    assert default.exit_code == 2
    assert "no deployment chosen" in default.output and "Cannot connect" not in default.output
    assert "--base-url" in default.output and "--local" in default.output
    # A deployment the user named is their own to fix: no advice about the default.
    named = runner.invoke(main, ["chat", "--max-retries", "0", "--base-url", closed, "Hi"])
    assert named.exit_code == 1 and "Cannot connect" in named.output
    assert "--local" not in named.output
