"""The conversation log: schema and migrations, concurrent writers, search, and its failures."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gprochat.log import MIGRATIONS, ConversationLog, Exchange, LogError, public_url

from .processes import clean_env, run_cli


def _exchange(prompt: str, cid: str = "c1", **fields: object) -> Exchange:
    return Exchange(conversation_id=cid, deployment="http://127.0.0.1:1", model="m", prompt=prompt,
                    answer=f"answer to {prompt}", **fields)  # type: ignore[arg-type]


def test_a_new_log_is_at_the_latest_schema_in_wal_mode(tmp_path: Path) -> None:
    with ConversationLog.open(tmp_path) as log:
        assert log.schema_version == len(MIGRATIONS) == 3
    db = sqlite3.connect(tmp_path / "logs.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    db.close()


def test_an_old_log_is_migrated_and_its_rows_become_searchable(tmp_path: Path) -> None:
    # A log written by a version that knew only the first migration.
    db = sqlite3.connect(tmp_path / "logs.db", isolation_level=None)
    MIGRATIONS[0](db)
    db.execute("PRAGMA user_version = 1")
    db.execute(
        "INSERT INTO exchanges (conversation_id, deployment, model, prompt, answer, started) "
        "VALUES ('old', 'http://x', 'm', 'about pangolins', 'scaly', '2026-01-01T00:00:00+00:00')"
    )
    db.close()
    with ConversationLog.open(tmp_path) as log:
        assert log.schema_version == 3
        assert [e.prompt for e in log.recent(query="pangolins")] == ["about pangolins"]
        log.record(_exchange("about quokkas", "new"))
        assert [e.conversation_id for e in log.recent(query="quokkas")] == ["new"]


def test_a_log_from_a_newer_gprochat_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "logs.db")
    db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    db.close()
    with pytest.raises(LogError, match=r"newer than this gprochat knows.*upgrade gprochat"):
        ConversationLog.open(tmp_path)


def test_search_recent_conversation_and_credentials(tmp_path: Path) -> None:
    with ConversationLog.open(tmp_path) as log:
        log.record(_exchange("first about llamas", "a"))
        log.record(_exchange("second, with \"quotes\" and punctuation!", "a"))
        log.record(Exchange(conversation_id="b", deployment="https://user:s3cret@chat.example:8443/x?y=1",
                            model="m", prompt="third", error="boom"))
        assert [e.prompt for e in log.recent(2)] == [
            "second, with \"quotes\" and punctuation!", "third"
        ]
        assert [e.prompt for e in log.recent(query="LLAMAS")] == ["first about llamas"]
        assert [e.prompt for e in log.recent(query='"quotes" punctuation!')] == [
            "second, with \"quotes\" and punctuation!"
        ]
        assert log.recent(query="nothing-like-this") == []
        assert [e.prompt for e in log.conversation("a")] == [
            "first about llamas", "second, with \"quotes\" and punctuation!"
        ]
        assert log.latest_conversation_id() == "b"
        third = log.recent(1)[0]
        assert third.deployment == "https://chat.example:8443/x?y=1"
        assert third.error == "boom" and third.answer == ""
    raw = (tmp_path / "logs.db").read_bytes() + b"".join(
        p.read_bytes() for p in tmp_path.glob("logs.db-*")
    )
    assert b"s3cret" not in raw


def test_public_url() -> None:
    assert public_url("http://u:p@host:1/x") == "http://host:1/x"
    assert public_url("http://host/") == "http://host/"
    assert public_url("local") == "local"


WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from gprochat.log import ConversationLog, Exchange
    directory, name, count = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    with ConversationLog.open(directory) as log:
        for i in range(count):
            log.record(Exchange(conversation_id=name, deployment="d", model="m",
                                prompt=f"{name} prompt {i}", answer="a"))
    """
)


def test_two_processes_writing_at_once_lose_nothing(tmp_path: Path) -> None:
    ConversationLog.open(tmp_path).close()
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), name, "150"], env=clean_env())
        for name in ("left", "right")
    ]
    for writer in writers:
        assert writer.wait(timeout=120) == 0
    with ConversationLog.open(tmp_path) as log:
        assert log.count() == 300
        for name in ("left", "right"):
            prompts = [e.prompt for e in log.conversation(name)]
            assert prompts == [f"{name} prompt {i}" for i in range(150)]
        assert len(log.recent(None, query="prompt")) == 300


def test_a_locked_log_is_one_clear_error(tmp_path: Path) -> None:
    ConversationLog.open(tmp_path).close()
    holder = sqlite3.connect(tmp_path / "logs.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with ConversationLog.open(tmp_path, busy_timeout=0.2) as log, pytest.raises(
            LogError, match=r"is locked by another program \(waited 0.2s\): try again, or pass --no-log"
        ):
            log.record(_exchange("blocked"))
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_a_damaged_log_is_one_clear_line_and_no_log_still_chats(gprochat_home: Path) -> None:
    (gprochat_home / "logs.db").write_bytes(b"this is not a database" * 100)
    result = run_cli("chat", "--local", "Hi")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"Error: the conversation log {gprochat_home / 'logs.db'} cannot be used (file is not a "
        "database): move the file away (a new log is started) or pass --no-log"
    ]
    # logs has no --no-log: its advice is what to do with the log it came to read.
    for args in (["logs"], ["logs", "--attachment", "3f2a"]):
        result = run_cli(*args)
        assert result.returncode == 1
        assert result.stderr.strip().splitlines() == [
            f"Error: the conversation log {gprochat_home / 'logs.db'} cannot be read (file is not a "
            "database): it is damaged; restore it from a backup, or move the file away (gprochat "
            "chat then starts a new log)"
        ]
    result = run_cli("chat", "--local", "--no-log", "Hi")
    assert result.returncode == 0 and result.stdout.rstrip().endswith("Hi")


def test_logs_command_text_and_filters(gprochat_home: Path) -> None:
    run_cli("chat", "--local", "--system", "Be brief.", "about walruses")
    run_cli("chat", "--local", "about narwhals")
    run_cli("chat", "--local", "-c", "and belugas")
    text = run_cli("logs", "-n", "1").stdout
    assert "## Prompt\n\nand belugas\n" in text and "narwhals" not in text
    everything = run_cli("logs", "-n", "0").stdout
    assert everything.count("## Prompt") == 3
    assert "## System\n\nBe brief." in everything
    found = run_cli("logs", "-q", "walruses").stdout
    assert found.count("## Prompt") == 1 and "about walruses" in found
    cid = run_cli("logs", "-n", "1", "--json").stdout.split('"conversation_id": "')[1][:12]
    by_cid = run_cli("logs", "--cid", cid).stdout
    assert by_cid.count("## Prompt") == 2 and "walruses" not in by_cid
    assert run_cli("logs", "--path").stdout.strip() == str(gprochat_home / "logs.db")


def test_a_file_where_the_log_directory_should_be_is_named(tmp_path: Path) -> None:
    in_the_way = tmp_path / "home"
    in_the_way.write_text("a file, not a directory\n")
    for home in (in_the_way, in_the_way / "deeper"):
        result = run_cli("chat", "--local", "Hi", env=clean_env(GPROCHAT_HOME=str(home)))
        assert result.returncode == 1
        assert result.stderr.strip().splitlines() == [
            f"Error: cannot open the conversation log {home / 'logs.db'}: {home} must be a directory, "
            "and a file is in the way (set GPROCHAT_HOME to a writable directory, or pass --no-log)"
        ]


def test_logs_with_a_file_in_the_way_does_not_suggest_no_log(tmp_path: Path) -> None:
    in_the_way = tmp_path / "home"
    in_the_way.write_text("a file, not a directory\n")
    result = run_cli("logs", env=clean_env(GPROCHAT_HOME=str(in_the_way)))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"Error: cannot open the conversation log {in_the_way / 'logs.db'}: {in_the_way} must be a "
        "directory, and a file is in the way (set GPROCHAT_HOME to the directory that holds your "
        "log; gprochat logs --path shows where it is looked for)"
    ]


def test_logs_says_when_there_is_nothing_to_show(gprochat_home: Path) -> None:
    db = gprochat_home / "logs.db"
    empty = run_cli("logs")
    assert empty.returncode == 0 and empty.stdout == ""
    assert empty.stderr == f"The log ({db}) is empty: gprochat chat records every exchange.\n"
    run_cli("chat", "--local", "about walruses")
    missed = run_cli("logs", "-q", "narwhals")
    assert missed.returncode == 0 and missed.stdout == ""
    assert missed.stderr == f"No exchange with every word of 'narwhals' in the log ({db}).\n"
    missed = run_cli("logs", "--cid", "000000000000", "-q", "walruses")
    assert missed.stderr == (
        f"No exchange in conversation '000000000000' with every word of 'walruses' in the log ({db}).\n"
    )
    # JSON stays a JSON array, with nothing on stderr.
    as_json = run_cli("logs", "-q", "narwhals", "--json")
    assert as_json.stdout == "[]\n" and as_json.stderr == ""


def test_text_with_lone_surrogates_is_stored_repaired(tmp_path: Path) -> None:
    """A caller's undecodable input reaches the log as U+FFFD, not as an encoding crash."""
    with ConversationLog.open(tmp_path) as log:
        record = _exchange("caf\udce9")
        record.answer = "bad \udcff answer"
        log.record(record)
        (stored,) = log.recent(None)
    assert stored.prompt == "caf\N{REPLACEMENT CHARACTER}"
    assert stored.answer == "bad \N{REPLACEMENT CHARACTER} answer"
