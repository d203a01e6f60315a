"""``gprochat chat -a``: images from the terminal, checked, sent intact, logged, sent again."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gprochat.server.backends import Backend
from gprochat.server.backends.base import Conversation

from .conftest import ServerFactory
from .image_samples import SVG, described, jpeg, png
from .processes import GPROCHAT, clean_env, run_cli
from .scripted import FAULTS, Fleet

SLOW = 300


class HistoryImages(Backend):
    """Names each earlier turn's images and the new message's, by SHA-256."""

    name = "history-images"
    accepts_images = True

    async def stream(self, conversation: Conversation) -> AsyncIterator[str]:
        for number, turn in enumerate(conversation.history):
            digests = ",".join(image.sha256 for image in turn.images) or "none"
            yield f"turn {number} {turn.role}: {digests}\n"
        yield f"new: {','.join(image.sha256 for image in conversation.images) or 'none'}"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_chat_sends_each_attached_file_byte_for_byte_and_logs_it(tmp_path: Path) -> None:
    photo, other = png(seed=5), jpeg(seed=2)
    (tmp_path / "photo.png").write_bytes(photo)
    (tmp_path / "other.jpg").write_bytes(other)
    result = run_cli("chat", "--local", "-a", str(tmp_path / "photo.png"), "--attachment",
                     str(tmp_path / "other.jpg"), "What is in this picture?", timeout=SLOW)
    assert result.returncode == 0, result.stderr
    assert "What is in this picture?" in result.stdout
    # The echo backend's lines: the SHA-256 of the files' bytes, in the order given.
    assert f"[image 1: {described(photo)}]\n[image 2: {described(other, 'image/jpeg')}]" in result.stdout
    [record] = json.loads(run_cli("logs", "--json", timeout=SLOW).stdout)
    assert [a["sha256"] for a in record["attachments"]] == [_sha(photo), _sha(other)]


def test_an_image_on_standard_input_with_the_prompt_as_argument(tmp_path: Path) -> None:
    photo = png(seed=11)
    result = subprocess.run([*GPROCHAT, "chat", "--local", "-a", "-", "Describe it"], input=photo,
                            env=clean_env(), capture_output=True, timeout=SLOW)
    assert result.returncode == 0, result.stderr
    assert f"[image 1: {described(photo)}]" in result.stdout.decode()
    assert "Describe it" in result.stdout.decode()


@pytest.mark.parametrize(
    ("name", "content", "said"),
    [
        ("missing.png", None, "Error: attachment: cannot read {path}: No such file or directory"),
        ("drawing.svg", SVG, "Error: attachment drawing.svg is SVG or other markup, not an image"),
        ("notes.png", b"just some text, renamed\n", "Error: attachment notes.png is text, not an image"),
        ("empty.png", b"", "Error: attachment empty.png is empty"),
    ],
)
def test_a_bad_attachment_is_one_line_exit_2_and_nothing_is_sent(
    tmp_path: Path, gprochat_home: Path, name: str, content: bytes | None, said: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    good = tmp_path / "good.png"
    good.write_bytes(png())
    with Fleet({"healthy": FAULTS["healthy"]}).in_thread() as fleet:
        result = run_cli("chat", "--base-url", fleet.url("healthy"), "-a", str(good), "-a", str(path),
                         "Hi", timeout=SLOW)
        assert fleet.count("healthy") == 0
    assert result.returncode == 2
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith(said.format(path=path)), line
    assert not (gprochat_home / "logs.db").exists()  # not even the log was opened


def test_standard_input_holds_one_image_and_then_the_prompt_is_an_argument() -> None:
    twice = run_cli("chat", "--local", "-a", "-", "-a", "-", "Hi", input="x")
    assert twice.returncode == 2 and "give it once" in twice.stderr
    no_prompt = subprocess.run([*GPROCHAT, "chat", "--local", "-a", "-"], input=png(),
                               env=clean_env(), capture_output=True, timeout=SLOW)
    assert no_prompt.returncode == 2
    assert b"give the prompt as an argument" in no_prompt.stderr


def test_continuing_a_conversation_sends_its_images_again(
    make_server: ServerFactory, tmp_path: Path, gprochat_home: Path
) -> None:
    server = make_server(backend=HistoryImages())
    photo = png(seed=21)
    (tmp_path / "photo.png").write_bytes(photo)
    first = run_cli("chat", "--base-url", server.base_url, "-a", str(tmp_path / "photo.png"), "first",
                    timeout=SLOW)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == f"new: {_sha(photo)}"
    again = run_cli("chat", "-c", "second", "-a", str(tmp_path / "photo.png"), timeout=SLOW)
    assert again.returncode == 0, again.stderr
    # The first turn's image went again, from the log, with the first prompt.
    assert again.stdout.strip().splitlines() == [
        f"turn 0 user: {_sha(photo)}", "turn 1 model: none", f"new: {_sha(photo)}"]
    third = run_cli("chat", "-c", "third", timeout=SLOW)
    assert third.stdout.strip().splitlines() == [
        f"turn 0 user: {_sha(photo)}", "turn 1 model: none",
        f"turn 2 user: {_sha(photo)}", "turn 3 model: none", "new: none"]
    with sqlite3.connect(gprochat_home / "logs.db") as db:  # sent three times, stored once
        assert db.execute("SELECT count(*) FROM attachments").fetchone()[0] == 1
        assert db.execute("SELECT count(*) FROM exchange_attachments").fetchone()[0] == 2


def test_an_image_over_the_servers_limit_is_its_one_line_refusal(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    server = make_server(max_image_bytes=64)
    big = png(width=32, height=32, seed=1)
    assert len(big) > 64
    (tmp_path / "big.png").write_bytes(big)
    result = run_cli("chat", "--base-url", server.base_url, "-a", str(tmp_path / "big.png"), "Hi",
                     timeout=SLOW)
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("Error: ") and "over the limit of 64 bytes" in line, line
