"""The ``gprochat`` command, run as a real process."""

from .processes import clean_env, free_port, run_cli, served


def test_chat_local_streams_an_answer_on_a_fresh_machine() -> None:
    result = run_cli("chat", "--local", "Hello, wörld! 你好")
    assert result.returncode == 0, result.stderr
    assert "built-in echo backend" in result.stdout
    assert "Hello, wörld! 你好" in result.stdout
    assert result.stderr == ""


def test_chat_reads_the_prompt_from_stdin() -> None:
    result = run_cli("chat", "--local", input="piped prompt\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().endswith("piped prompt")


def test_chat_with_system_prompt_sends_native_turns_and_flattens_on_request() -> None:
    result = run_cli("chat", "--local", "--system", "Be terse.", "Hi")
    assert result.stdout.rstrip().endswith(": Be terse.\n\nHi")
    result = run_cli("chat", "--local", "--system", "Be terse.", "--history", "flatten", "Hi")
    assert "System: Be terse.\nUser: Hi\nAssistant:" in result.stdout


def test_chat_against_a_served_deployment_with_secret_and_password() -> None:
    with served("--secret-key", "s3cret", "--password", "pw1,pw2") as base_url:
        ok = run_cli("chat", "--base-url", base_url, "--secret-key", "s3cret", "--password", "pw2", "Hi")
        assert ok.returncode == 0, ok.stderr
        assert ok.stdout.rstrip().endswith("Hi")

        wrong_secret = run_cli("chat", "--base-url", base_url, "--password", "pw1", "Hi")
        assert wrong_secret.returncode == 1
        assert "Invalid signature." in wrong_secret.stderr
        assert "--secret-key" in wrong_secret.stderr
        assert "Traceback" not in wrong_secret.stderr
        assert len(wrong_secret.stderr.strip().splitlines()) == 1

        env = clean_env(GPROCHAT_BASE_URL=base_url, GPROCHAT_SECRET_KEY="s3cret", GPROCHAT_PASSWORD="nope")
        wrong_password = run_cli("chat", "Hi", env=env)
        assert wrong_password.returncode == 1
        assert "Invalid password." in wrong_password.stderr


def test_chat_with_nothing_listening_is_one_clear_line() -> None:
    port = free_port()
    result = run_cli("chat", "--base-url", f"http://127.0.0.1:{port}", "Hi")
    assert result.returncode == 1
    *retries, last = result.stderr.strip().splitlines()
    assert last.startswith("Error: Cannot connect to") and last.endswith("(after 3 attempts)")
    assert f"127.0.0.1:{port}" in last
    # Each wait before a retry is said, on its own line.
    assert len(retries) == 2 and all(line.startswith("gprochat: Cannot connect") for line in retries)
    assert "Traceback" not in result.stderr


def test_chat_unknown_model_names_the_supported_ones() -> None:
    result = run_cli("chat", "--local", "--model", "gpt-9", "Hi")
    assert result.returncode == 1
    assert "gemini-1.5-pro" in result.stderr and "Traceback" not in result.stderr


def test_serve_refuses_an_unknown_backend() -> None:
    result = run_cli("serve", "--backend", "nonsense", "--port", str(free_port()))
    assert result.returncode == 2
    assert "'nonsense' is not one of 'auto', 'echo'" in result.stderr
