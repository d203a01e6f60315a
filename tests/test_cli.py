"""The ``gprochat`` command, run as a real process."""

import json
from pathlib import Path

from .processes import clean_env, free_port, run_cli, served
from .scripted import FAULTS, Fleet, refusing_status

# A generous limit for each command: only a hang should fail (the machine may be loaded).
SLOW = 300
ORDER = ["refusing", "rate-limited", "failing", "stalling", "wrong-key", "healthy"]


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
    result = run_cli("chat", "--local", "--model", "gpt-9", "Hi", timeout=SLOW)
    assert result.returncode == 1
    assert "gemini-1.5-pro" in result.stderr and "Traceback" not in result.stderr
    # The bundled server's own model names are among them (echo here), and accepted.
    assert "answers to: echo," in result.stderr
    served_name = run_cli("chat", "--local", "-m", "echo", "--json", "Hi", timeout=SLOW)
    assert served_name.returncode == 0, served_name.stderr
    assert json.loads(served_name.stdout)["model"] == "echo"


def test_chat_fails_over_across_deployments_and_answers_once() -> None:
    with Fleet({name: FAULTS[name] for name in ORDER[1:]}).in_thread() as fleet:
        options = [arg for name in ORDER for arg in ("--deployment", f"{fleet.url(name)},secret=k")]
        result = run_cli("chat", *options, "--timeout", "2", "Hi", timeout=SLOW)
        assert result.returncode == 0, result.stderr
        assert result.stdout == "The whole answer.\n"
        assert [fleet.count(name) for name in ORDER[1:]] == [1, 1, 1, 1, 1]
        # Each failover is said on stderr; the wrong key once, as a warning.
        assert result.stderr.count("Invalid signature.") == 1
        assert "will not use it again" in result.stderr
        # The log names the deployment that answered.
        [record] = json.loads(run_cli("logs", "--json", timeout=SLOW).stdout)
        assert record["deployment"] == fleet.url("healthy")


def test_chat_waits_out_a_retry_after_and_never_asks_a_rejected_key_again() -> None:
    """Two rounds (--max-retries 1): the 401 is not asked in the second, and the 429 is
    asked again only once its Retry-After has passed (the order of the server's events)."""
    scripts = {"wrong-key": FAULTS["wrong-key"],
               "rate-limited": refusing_status(429, "Too many requests.", {"Retry-After": "1"})}
    with Fleet(scripts).in_thread() as fleet:
        result = run_cli("chat", "--deployment", fleet.url("wrong-key"), "--deployment",
                         fleet.url("rate-limited"), "--max-retries", "1", "Hi", timeout=SLOW)
        assert result.returncode == 1
        assert fleet.count("wrong-key") == 1 and fleet.count("rate-limited") == 2
        first, second = fleet.servers["rate-limited"].requests
        assert second.received - first.received >= 0.95
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("Error: No answer from any of the 2 deployments")
        assert "not used again" in last and last.endswith("(after 3 attempts)")


def test_chat_reports_a_cut_answer_as_cut_from_a_deployments_file(tmp_path: Path) -> None:
    with Fleet({"cutting": FAULTS["cutting"], "healthy": FAULTS["healthy"]}).in_thread() as fleet:
        file = tmp_path / "deployments.toml"
        file.write_text("".join(f'[[deployment]]\nbase_url = "{fleet.url(name)}"\n\n'
                                for name in ("refusing", "cutting", "healthy")))
        result = run_cli("chat", "Hi", env=clean_env(GPROCHAT_DEPLOYMENTS=str(file)))
        assert result.returncode == 1
        assert result.stdout.startswith("Half an ans") and "The whole" not in result.stdout
        assert "cut off after 11 characters" in result.stderr
        assert fleet.count("healthy") == 0
        # An option naming one deployment wins over the environment's file.
        named = run_cli("chat", "--deployments", str(file), "--base-url", fleet.url("healthy"), "Hi",
                        timeout=SLOW)
        assert named.returncode == 2 and "use one of them" in named.stderr


def test_chat_with_no_deployment_fails_at_once_saying_how_to_choose_one() -> None:
    env = clean_env(GPROCHAT_MODEL_PATH="/nonexistent/model.gguf")
    del env["GPROCHAT_BACKEND"]
    result = run_cli("chat", "Hi", env=env, timeout=SLOW)
    assert result.returncode == 2
    assert "no deployment chosen" in result.stderr
    for way in ("--base-url", "--deployment", "--deployments", "--local", "GPROCHAT_DEPLOYMENTS"):
        assert way in result.stderr
    assert "attempts" not in result.stderr and "Traceback" not in result.stderr


def test_chat_with_no_deployment_uses_the_bundled_server() -> None:
    # GPROCHAT_BACKEND=echo stands in for an installed local model (tests/server covers it).
    result = run_cli("chat", "--json", "Hi", timeout=SLOW)
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["deployment"] == "local" and record["answer"].endswith("Hi")
    assert "no deployment chosen, so the bundled server answers" in result.stderr


def test_deployments_check_probes_each_and_prints_a_table(tmp_path: Path) -> None:
    with Fleet(FAULTS).in_thread() as fleet:
        file = tmp_path / "deployments.toml"
        file.write_text("".join(f'[[deployment]]\nbase_url = "{fleet.url(name)}"\nmodel = "m-{name}"\n\n'
                                for name in [*ORDER[:-1], "cutting", "healthy"]))
        result = run_cli("deployments", "check", str(file), "--json", "--timeout", "2", timeout=SLOW)
        assert result.returncode == 0, result.stderr
        rows = {row["base_url"]: row for row in json.loads(result.stdout)}
        status = {name: rows[fleet.url(name)]["status"] for name in [*ORDER, "cutting"]}
        assert status == {"refusing": "unreachable", "rate-limited": "rate-limited", "failing": "error",
                          "stalling": "timeout", "wrong-key": "credentials", "healthy": "ok",
                          "cutting": "ok"}
        assert rows[fleet.url("healthy")]["usable"] and not rows[fleet.url("wrong-key")]["usable"]
        assert rows[fleet.url("healthy")]["model"] == "m-healthy"
        assert rows[fleet.url("healthy")]["model_source"] == "declared"
        assert isinstance(rows[fleet.url("healthy")]["latency_ms"], int)
        assert [fleet.count(name) for name in ORDER[1:-1]] == [1, 1, 1, 1]  # no retries

        table = run_cli("deployments", "check", "--deployment", fleet.url("wrong-key"),
                        "--deployment", fleet.url("refusing"), timeout=SLOW)
        assert table.returncode == 1 and "no deployment is usable" in table.stderr
        header, *lines = table.stdout.splitlines()
        assert header.split()[:4] == ["DEPLOYMENT", "STATUS", "LATENCY", "MODEL"]
        assert lines[0].split()[:2] == [fleet.url("wrong-key"), "credentials"]
        assert lines[1].split()[:2] == [fleet.url("refusing"), "unreachable"]


def test_deployments_check_reads_the_model_a_gprochat_server_names() -> None:
    with served("--secret-key", "s3cret", timeout=SLOW) as base_url:
        result = run_cli("deployments", "check", "--deployment", f"{base_url},secret=s3cret", "--json",
                         timeout=SLOW)
    assert result.returncode == 0, result.stderr
    [row] = json.loads(result.stdout)
    assert row["status"] == "ok" and row["model"] == "echo" and row["model_source"] == "server"


def test_models_local_names_what_the_bundled_server_offers() -> None:
    result = run_cli("models", "--local", "--json", timeout=SLOW)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["local"]["models"] == ["echo"]
    assert run_cli("models", "--local", timeout=SLOW).stdout.startswith("echo  (chat --local")


def test_serve_refuses_an_unknown_backend() -> None:
    result = run_cli("serve", "--backend", "nonsense", "--port", str(free_port()))
    assert result.returncode == 2
    assert "'nonsense' is not one of 'auto', 'echo'" in result.stderr
