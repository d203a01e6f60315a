"""The conversation log's attachments: stored once by SHA-256, listed, written out, migrated to."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
from pathlib import Path

import pytest

from gprochat.images import Image
from gprochat.log import MIGRATIONS, Attachment, ConversationLog, Exchange, LogError

from .image_samples import jpeg, png
from .processes import GPROCHAT, clean_env, run_cli


def _exchange(prompt: str, cid: str = "c1") -> Exchange:
    return Exchange(conversation_id=cid, deployment="http://127.0.0.1:1", model="m", prompt=prompt,
                    answer=f"answer to {prompt}")


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _counts(path: Path) -> tuple[int, int]:
    with sqlite3.connect(path / "logs.db") as db:
        stored = db.execute("SELECT count(*) FROM attachments").fetchone()[0]
        links = db.execute("SELECT count(*) FROM exchange_attachments").fetchone()[0]
    return stored, links


def test_each_image_is_stored_once_and_listed_in_order(tmp_path: Path) -> None:
    photo, other = png(seed=1), jpeg()
    with ConversationLog.open(tmp_path) as log:
        log.record(_exchange("two pictures"), [Image.from_bytes(photo), Image.from_bytes(other)])
        log.record(_exchange("the first again"), [Image.from_bytes(photo)])
        log.record(_exchange("no picture"))
        first, second, third = log.recent()
    assert _counts(tmp_path) == (2, 3)  # two distinct images, three links
    assert first.attachments == [Attachment(sha256_of(photo), "image/png", len(photo)),
                                 Attachment(sha256_of(other), "image/jpeg", len(other))]
    assert second.attachments == [Attachment(sha256_of(photo), "image/png", len(photo))]
    assert third.attachments == []
    assert first.to_dict()["attachments"][1] == {"sha256": sha256_of(other), "type": "image/jpeg",
                                                 "size": len(other)}


def test_an_attachment_is_read_back_byte_for_byte_by_a_sha256_prefix(tmp_path: Path) -> None:
    photo = png(seed=7)
    with ConversationLog.open(tmp_path) as log:
        log.record(_exchange("a picture"), [Image.from_bytes(photo)])
        attachment, content = log.attachment(sha256_of(photo)[:8].upper())
        assert content == photo and attachment.sha256 == sha256_of(photo)
        [exchange] = log.recent()
        [image] = log.images(exchange)
        assert image.decode() == photo and image.mime_type == "image/png"
        with pytest.raises(LogError, match="at least 4 of the hex digits"):
            log.attachment("ab")
        with pytest.raises(LogError, match="at least 4 of the hex digits"):
            log.attachment("not-hex")
        missing = "0000" if not sha256_of(photo).startswith("0000") else "ffff"
        with pytest.raises(LogError, match=f"no attachment with SHA-256 {missing}"):
            log.attachment(missing)


def test_an_ambiguous_prefix_asks_for_more_digits(tmp_path: Path) -> None:
    with ConversationLog.open(tmp_path) as log:
        pass
    with sqlite3.connect(tmp_path / "logs.db") as db:  # two digests that share 5 digits
        for digest in ("abcde" + "1" * 59, "abcde" + "2" * 59):
            db.execute("INSERT INTO attachments VALUES (?, 'image/png', 1, x'00')", (digest,))
    with ConversationLog.open(tmp_path) as log:
        with pytest.raises(LogError, match="several attachments have a SHA-256 starting abcde: give more"):
            log.attachment("abcde")
        assert log.attachment("abcde2")[0].sha256 == "abcde" + "2" * 59


def test_a_log_written_by_the_previous_schema_keeps_its_rows(tmp_path: Path) -> None:
    """A version-2 log (before attachments) opens, is migrated, and loses nothing."""
    db = sqlite3.connect(tmp_path / "logs.db", isolation_level=None)
    for number, migration in enumerate(MIGRATIONS[:2], start=1):
        migration(db)
        db.execute(f"PRAGMA user_version = {number}")
    rows = [("old", "http://x", "m", None, f"about pangolins {n}", f"scaly {n}", "2026-01-01T00:00:00+00:00",
             "2026-01-01T00:00:01+00:00", 1000 + n, n % 2, None if n else "boom") for n in range(3)]
    db.executemany(
        "INSERT INTO exchanges (conversation_id, deployment, model, system, prompt, answer, started, "
        "finished, duration_ms, incomplete, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    before = db.execute("SELECT * FROM exchanges ORDER BY id").fetchall()
    db.close()
    photo = png(seed=3)
    with ConversationLog.open(tmp_path) as log:
        assert log.schema_version == len(MIGRATIONS) == 3
        assert [e.prompt for e in log.recent(query="pangolins")] == [f"about pangolins {n}" for n in range(3)]
        assert all(e.attachments == [] for e in log.recent())
        log.record(_exchange("about quokkas", "new"), [Image.from_bytes(photo)])
        assert [e.attachments[0].sha256 for e in log.recent(query="quokkas")] == [sha256_of(photo)]
    with sqlite3.connect(tmp_path / "logs.db") as db:
        after = db.execute("SELECT * FROM exchanges ORDER BY id").fetchall()
    assert after[:3] == before


def test_logs_lists_attachments_and_writes_one_out(gprochat_home: Path) -> None:
    photo = png(seed=9)
    with ConversationLog.open(gprochat_home) as log:
        log.record(_exchange("what is this"), [Image.from_bytes(photo), Image.from_bytes(jpeg())])
    digest = sha256_of(photo)
    text = run_cli("logs")
    assert text.returncode == 0, text.stderr
    assert "## Attachments\n\n" f"1. image/png, {len(photo)} bytes, sha256 {digest[:12]}\n" in text.stdout
    assert f"2. image/jpeg, {len(jpeg())} bytes, sha256 {sha256_of(jpeg())[:12]}" in text.stdout
    [record] = json.loads(run_cli("logs", "--json").stdout)
    assert record["attachments"][0] == {"sha256": digest, "type": "image/png", "size": len(photo)}
    # Search still finds it, with its attachments.
    assert digest[:12] in run_cli("logs", "-q", "what").stdout

    out = subprocess.run([*GPROCHAT, "logs", "--attachment", digest[:12]], env=clean_env(),
                         capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout == photo
    unknown = run_cli("logs", "--attachment", "0000" if not digest.startswith("0000") else "ffff")
    assert unknown.returncode == 1 and unknown.stdout == ""
    assert unknown.stderr.startswith("Error: no attachment with SHA-256")
