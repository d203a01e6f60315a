"""``gprochat chat`` on a real pseudo-terminal (pexpect): the interactive session, the log.

The server runs in the test process on 127.0.0.1; ``gprochat`` is a child process on
a pty, so prompt_toolkit and rich see a real terminal.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pexpect
import pyte
import pytest

from gprochat.server.backends import Backend
from gprochat.server.backends.base import Conversation

from .conftest import ServerFactory
from .processes import clean_env, run_cli

PROMPT_READY = "\x1b[?2004h"  # prompt_toolkit turns bracketed paste on when it reads a line


class HistoryReporter(Backend):
    """Says how many earlier turns it received and what the first one was."""

    name = "history-reporter"

    async def stream(self, conversation: Conversation) -> AsyncIterator[str]:
        turns = conversation.history
        yield f"received {len(turns)} earlier turns"
        if turns:
            yield f" first={turns[0].text.split()[-1]} second={turns[1].text.split()[-1]}" if len(
                turns
            ) > 1 else f" first={turns[0].text.split()[-1]}"
        yield f" now={conversation.message.split()[-1]}"


def _env(home: Path) -> dict[str, str]:
    return clean_env(GPROCHAT_HOME=str(home), PROMPT_TOOLKIT_NO_CPR="1", TERM="xterm-256color")


@pytest.fixture
def spawn(gprochat_home: Path) -> Iterator[object]:
    children: list[pexpect.spawn] = []

    def start(*args: str) -> pexpect.spawn:
        child = pexpect.spawn(
            sys.executable, ["-m", "gprochat", "chat", *args], env=_env(gprochat_home),
            encoding="utf-8", dimensions=(50, 200), timeout=30,
        )
        children.append(child)
        return child

    yield start
    for child in children:
        if child.isalive():
            child.terminate(force=True)
        child.close()


def _log_rows(home: Path) -> list[sqlite3.Row]:
    with sqlite3.connect(home / "logs.db") as db:
        db.row_factory = sqlite3.Row
        return db.execute("SELECT * FROM exchanges ORDER BY id").fetchall()


def test_three_turns_send_the_earlier_ones_as_history_then_logs_and_continue(
    make_server: ServerFactory, spawn: object, gprochat_home: Path
) -> None:
    server = make_server(backend=HistoryReporter())
    child = spawn("--base-url", server.base_url)  # type: ignore[operator]
    child.expect_exact(PROMPT_READY)
    child.sendline("tell me about aardvarks please")
    child.expect("received 0 earlier turns now=please")
    child.expect_exact(PROMPT_READY)
    child.sendline("and about bonobos")
    child.expect("received 2 earlier turns first=please second=.* now=bonobos")
    child.expect_exact(PROMPT_READY)
    child.sendline("and cassowaries")
    # The third turn: the server got the first two exchanges (four turns) as history.
    child.expect("received 4 earlier turns first=please second=.* now=cassowaries")
    child.expect_exact(PROMPT_READY)
    child.sendcontrol("d")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0

    rows = _log_rows(gprochat_home)
    assert [row["prompt"] for row in rows] == [
        "tell me about aardvarks please", "and about bonobos", "and cassowaries"
    ]
    assert len({row["conversation_id"] for row in rows}) == 1
    assert all(row["deployment"] == server.base_url and not row["incomplete"] for row in rows)

    # logs -q finds a word of the first turn, and only that exchange.
    found = run_cli("logs", "-q", "aardvarks", "--json", env=_env(gprochat_home))
    assert found.returncode == 0, found.stderr
    exchanges = json.loads(found.stdout)
    # (the answers quote only the last word of a prompt: "aardvarks" is in the first alone)
    assert [e["prompt"] for e in exchanges] == ["tell me about aardvarks please"]
    cid = exchanges[0]["conversation_id"]

    # chat -c continues it: the server receives all three earlier exchanges.
    more = run_cli("chat", "--base-url", server.base_url, "-c", "and dodos", env=_env(gprochat_home))
    assert more.returncode == 0, more.stderr
    assert "received 6 earlier turns first=please" in more.stdout
    assert "now=dodos" in more.stdout
    assert _log_rows(gprochat_home)[-1]["conversation_id"] == cid

    # And interactively: --cid opens a session that goes on from the fourth exchange.
    child = spawn("--base-url", server.base_url, "--cid", cid)  # type: ignore[operator]
    child.expect(f"conversation {cid}, continuing 4 earlier turns")
    child.expect_exact(PROMPT_READY)
    child.sendline("and emus")
    child.expect("received 8 earlier turns first=please .* now=emus")
    child.expect_exact(PROMPT_READY)
    child.sendcontrol("d")
    child.expect(pexpect.EOF)
    assert [row["conversation_id"] for row in _log_rows(gprochat_home)] == [cid] * 5


class SlowWords(Backend):
    """Two hundred words, one every 0.2 s; notes when its stream is closed early."""

    name = "slow-words"

    def __init__(self) -> None:
        self.cut = threading.Event()

    async def stream(self, conversation: Conversation) -> AsyncIterator[str]:
        if conversation.message == "still here":
            yield "yes, still here"
            return
        finished = False
        try:
            for i in range(200):
                yield f"word{i} "
                await asyncio.sleep(0.2)
            finished = True
        finally:
            if not finished:
                self.cut.set()


def test_ctrl_c_stops_the_answer_and_keeps_the_session(
    make_server: ServerFactory, spawn: object, gprochat_home: Path
) -> None:
    backend = SlowWords()
    server = make_server(backend=backend)
    child = spawn("--base-url", server.base_url)  # type: ignore[operator]
    child.expect_exact(PROMPT_READY)
    child.sendline("talk for a long time")
    child.expect("word3")  # the answer is streaming
    child.sendintr()
    child.expect_exact("[answer stopped]")
    # The connection was cut, so the server stopped generating.
    assert backend.cut.wait(10)
    child.expect_exact(PROMPT_READY)
    child.sendline("still here")
    child.expect("yes, still here")
    child.expect_exact(PROMPT_READY)
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0

    first, second = _log_rows(gprochat_home)
    assert first["incomplete"] == 1 and first["error"] is None
    assert "word3" in first["answer"] and "word199" not in first["answer"]
    assert second["incomplete"] == 0 and second["answer"] == "yes, still here"
    assert first["conversation_id"] == second["conversation_id"]


def test_piped_stdout_gets_the_plain_answers_only(tmp_path: Path, gprochat_home: Path) -> None:
    out = tmp_path / "answers.txt"
    child = pexpect.spawn(
        "bash", ["-c", f"'{sys.executable}' -m gprochat chat --local > '{out}'"],
        env=_env(gprochat_home), encoding="utf-8", dimensions=(50, 200), timeout=30,
    )
    try:
        child.expect_exact(PROMPT_READY)  # the prompt is on the terminal (stderr)
        child.sendline("keep **this** raw")
        child.expect_exact(PROMPT_READY)
        child.sendline("/help")
        child.expect("Esc then Enter")
        child.expect_exact(PROMPT_READY)
        child.sendcontrol("d")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0
    # No Markdown rendering, no banner, no help, no escape codes: the answer as sent.
    assert out.read_text() == "Echo from the built-in echo backend (no model behind it): keep **this** raw\n"


def test_slash_commands(make_server: ServerFactory, spawn: object, gprochat_home: Path) -> None:
    server = make_server(backend=HistoryReporter())
    child = spawn("--base-url", server.base_url)  # type: ignore[operator]
    child.expect_exact(PROMPT_READY)
    child.sendline("/help")
    child.expect("Esc then Enter")
    child.expect_exact(PROMPT_READY)
    child.sendline("/system Answer in French.")
    child.expect("System prompt set")
    child.expect_exact(PROMPT_READY)
    child.sendline("one")
    child.expect("received 0 earlier turns now=one")
    child.expect_exact(PROMPT_READY)
    child.sendline("/clear")
    child.expect("New conversation")
    child.expect_exact(PROMPT_READY)
    child.sendline("two")
    child.expect("received 0 earlier turns now=two")  # /clear dropped the history
    child.expect_exact(PROMPT_READY)
    child.sendline("/nonsense")
    child.expect("Unknown command /nonsense")
    child.expect_exact(PROMPT_READY)
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    one, two = _log_rows(gprochat_home)
    assert one["system"] == two["system"] == "Answer in French."
    assert one["conversation_id"] != two["conversation_id"]


def test_esc_enter_makes_a_multi_line_message(
    make_server: ServerFactory, spawn: object, gprochat_home: Path
) -> None:
    server = make_server()
    child = spawn("--base-url", server.base_url)  # type: ignore[operator]
    child.expect_exact(PROMPT_READY)
    child.send("line one")
    child.send("\x1b\r")  # Esc, Enter: a new line, not sent
    child.send("line two\r")
    child.expect("backend.*line two")
    child.expect_exact(PROMPT_READY)
    child.sendcontrol("d")
    child.expect(pexpect.EOF)
    (row,) = _log_rows(gprochat_home)
    assert row["prompt"] == "line one\nline two"


def test_local_session_works_too(spawn: object, gprochat_home: Path) -> None:
    child = spawn("--local")  # type: ignore[operator]
    child.expect_exact("Chatting with local (echo)")  # the backend that answers
    child.expect_exact(PROMPT_READY)
    child.sendline("hello local")
    child.expect("backend.*hello local")
    child.expect_exact(PROMPT_READY)
    child.sendcontrol("d")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    (row,) = _log_rows(gprochat_home)
    assert row["deployment"] == "local" and row["model"] == "echo"


def test_interrupting_a_one_shot_chat_logs_the_cut_answer(
    make_server: ServerFactory, gprochat_home: Path
) -> None:
    backend = SlowWords()
    server = make_server(backend=backend)
    process = subprocess.Popen(
        [sys.executable, "-m", "gprochat", "chat", "--base-url", server.base_url, "talk"],
        env=_env(gprochat_home), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )
    assert process.stdout is not None
    assert process.stdout.read(6) == "word0 "  # streaming has begun
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 130
    assert err == "Error: interrupted\n"
    assert backend.cut.wait(10)
    (row,) = _log_rows(gprochat_home)
    assert row["incomplete"] == 1 and row["answer"].startswith("word0 ")


class TallAnswer(Backend):
    """Forty numbered Markdown paragraphs, a few at a time: taller than a small terminal."""

    name = "tall-answer"

    async def stream(self, conversation: Conversation) -> AsyncIterator[str]:
        for i in range(40):
            yield f"paragraph-{i:02d} of the tall answer\n\n"
            if i % 4 == 3:
                await asyncio.sleep(0.15)  # let the live display refresh in between


def test_an_answer_taller_than_the_terminal_is_in_the_scrollback_once(
    make_server: ServerFactory, gprochat_home: Path
) -> None:
    """rich's Live display used to reprint the whole answer on every refresh once it no
    longer fitted on the screen; a terminal emulator (pyte) replays what the user saw."""
    rows, columns = 12, 80
    server = make_server(backend=TallAnswer())
    child = pexpect.spawn(
        sys.executable, ["-m", "gprochat", "chat", "--base-url", server.base_url],
        env=_env(gprochat_home), encoding="utf-8", dimensions=(rows, columns), timeout=30,
    )
    seen = io.StringIO()
    child.logfile_read = seen
    try:
        child.expect_exact(PROMPT_READY)
        child.sendline("tell me a lot")
        child.expect("paragraph-39")
        child.expect_exact(PROMPT_READY)
        child.sendcontrol("d")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    screen = pyte.HistoryScreen(columns, rows, history=1000)
    pyte.Stream(screen).feed(seen.getvalue())
    lines = [
        "".join(line[x].data for x in range(columns)).rstrip()
        for line in [*screen.history.top, *(screen.buffer[y] for y in range(rows))]
    ]
    text = "\n".join(lines)
    for i in range(40):
        assert text.count(f"paragraph-{i:02d} of the tall answer") == 1, (i, text)
    # In order, after the prompt.
    assert text.index("tell me a lot") < text.index("paragraph-00") < text.index("paragraph-39")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--base-url", "127.0.0.1:8000"),
         "Error: base_url='127.0.0.1:8000' is not an http:// or https:// URL"),
        (("--proxy", "ftp://127.0.0.1:21"), "Error: proxy="),
    ],
)
def test_a_malformed_setting_stops_the_session_before_it_opens(
    spawn: object, gprochat_home: Path, args: tuple[str, ...], message: str
) -> None:
    """Not at the first prompt, after the user typed it, as a failed exchange in the log."""
    child = spawn(*args)  # type: ignore[operator]
    child.expect_exact(message)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 1
    assert "Chatting with" not in (child.before or "")
    assert not (gprochat_home / "logs.db").exists() or _log_rows(gprochat_home) == []


def test_chat_local_ignores_a_base_url_in_the_environment(gprochat_home: Path) -> None:
    result = run_cli("chat", "--local", "hi", env=clean_env(GPROCHAT_HOME=str(gprochat_home),
                                                            GPROCHAT_BASE_URL="localhost:8000"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith(": hi\n")


def test_a_message_that_is_not_utf8_is_repaired_not_fatal(gprochat_home: Path) -> None:
    """A terminal in another encoding (or a paste of raw bytes): prompt_toolkit hands the
    bad bytes over as lone surrogates, which used to end the session with a traceback."""
    child = pexpect.spawn(
        sys.executable, ["-m", "gprochat", "chat", "--local"], env=_env(gprochat_home),
        encoding="utf-8", codec_errors="replace", dimensions=(50, 200), timeout=30,
    )
    child.expect_exact(PROMPT_READY)
    try:
        os.write(child.child_fd, b"caf\xe9 au lait\r")  # raw bytes, as such a terminal sends them
        child.expect_exact("Warning: the message is not valid UTF-8")
        child.expect("backend.*caf\N{REPLACEMENT CHARACTER} au lait")
        child.expect_exact(PROMPT_READY)
        child.sendline("still here")
        child.expect("backend.*still here")
        child.expect_exact(PROMPT_READY)
        child.sendcontrol("d")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
    first, second = _log_rows(gprochat_home)
    assert first["prompt"] == "caf\N{REPLACEMENT CHARACTER} au lait" and first["error"] is None
    assert second["answer"].endswith("still here")


def test_continue_goes_back_where_the_conversation_was_held(
    make_server: ServerFactory, gprochat_home: Path
) -> None:
    """As llm -c keeps the conversation's model: no --base-url needed (it would have gone
    to gprochat.com); a --local conversation continues on the bundled server."""
    server = make_server(backend=HistoryReporter())
    env = _env(gprochat_home)
    first = run_cli("chat", "--base-url", server.base_url, "about aardvarks", env=env)
    assert first.returncode == 0, first.stderr
    more = run_cli("chat", "-c", "and bonobos", env=env)
    assert more.returncode == 0, more.stderr
    assert "received 2 earlier turns first=aardvarks" in more.stdout and "now=bonobos" in more.stdout
    assert _log_rows(gprochat_home)[-1]["deployment"] == server.base_url

    local = run_cli("chat", "--local", "hello there", env=env)
    assert local.returncode == 0, local.stderr
    again = run_cli("chat", "-c", "hello again", env=env)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("Echo from the built-in echo backend")
    last, before = _log_rows(gprochat_home)[-1], _log_rows(gprochat_home)[-2]
    assert last["deployment"] == "local" and last["conversation_id"] == before["conversation_id"]


class FirstLineThenWords(Backend):
    """A first line, then a word every 0.1 s until the connection is cut."""

    name = "first-line-then-words"

    async def stream(self, conversation: Conversation) -> AsyncIterator[str]:
        yield "The first line of the answer.\n\n"
        for i in range(600):
            yield f"word{i} "
            await asyncio.sleep(0.1)


def _screen_text(output: str, rows: int, columns: int) -> str:
    """What a terminal shows after ``output``, scrollback included (pyte)."""
    screen = pyte.HistoryScreen(columns, rows, history=1000)
    pyte.Stream(screen).feed(output)
    lines = [
        "".join(line[x].data for x in range(columns)).rstrip()
        for line in [*screen.history.top, *(screen.buffer[y] for y in range(rows))]
    ]
    return "\n".join(lines)


@pytest.mark.parametrize("columns", [80, 34])
def test_ctrl_c_during_an_answer_leaves_it_on_the_screen_once(
    make_server: ServerFactory, gprochat_home: Path, columns: int
) -> None:
    """Ctrl-C used to leave the answer's first line on the screen twice. At 34 columns
    the words wrap over several lines while the answer streams."""
    rows = 20
    server = make_server(backend=FirstLineThenWords())
    child = pexpect.spawn(
        sys.executable, ["-m", "gprochat", "chat", "--base-url", server.base_url],
        env=_env(gprochat_home), encoding="utf-8", dimensions=(rows, columns), timeout=30,
    )
    seen = io.StringIO()
    child.logfile_read = seen
    try:
        child.expect_exact(PROMPT_READY)
        child.sendline("go on")
        child.expect("word12")
        child.sendintr()
        child.expect_exact("[answer stopped]")
        child.expect_exact(PROMPT_READY)
        child.sendcontrol("d")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    text = _screen_text(seen.getvalue(), rows, columns)
    assert text.count("The first line of the answer.") == 1, text
    assert len(re.findall(r"\bword3\b", text)) == 1, text
    # The answer, then the note, then the next prompt, nothing in between but the words.
    assert text.index("go on") < text.index("The first line") < text.index("word12")
    assert text.index("word12") < text.index("[answer stopped]")


class FewSlowWords(Backend):
    """Ten words, one every 0.2 s, then the end."""

    name = "few-slow-words"

    async def stream(self, conversation: Conversation) -> AsyncIterator[str]:
        for i in range(10):
            yield f"slow{i} "
            await asyncio.sleep(0.2)


def test_what_is_typed_during_an_answer_waits_for_the_next_prompt(
    make_server: ServerFactory, gprochat_home: Path
) -> None:
    """Not echoed into the answer being drawn; shown at the next prompt and sent with Enter."""
    rows, columns = 20, 80
    server = make_server(backend=FewSlowWords())
    child = pexpect.spawn(
        sys.executable, ["-m", "gprochat", "chat", "--base-url", server.base_url],
        env=_env(gprochat_home), encoding="utf-8", dimensions=(rows, columns), timeout=30,
    )
    seen = io.StringIO()
    child.logfile_read = seen
    try:
        child.expect_exact(PROMPT_READY)
        child.sendline("first")
        child.expect("slow2")
        child.send("typed ahead")
        child.expect("slow9")
        child.expect_exact(PROMPT_READY)
        child.send("\r")
        child.expect("slow9")
        child.expect_exact(PROMPT_READY)
        child.sendcontrol("d")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    text = _screen_text(seen.getvalue(), rows, columns)
    assert text.count("typed ahead") == 1, text
    assert text.index("slow9") < text.index("> typed ahead")
    assert [row["prompt"] for row in _log_rows(gprochat_home)] == ["first", "typed ahead"]


def test_attach_in_the_interactive_chat(make_server: ServerFactory, spawn: object, gprochat_home: Path,
                                        tmp_path: Path) -> None:
    from .image_samples import SVG, described, jpeg, png

    photo, other = png(seed=31), jpeg(seed=4)
    (tmp_path / "photo.png").write_bytes(photo)
    (tmp_path / "other image.jpg").write_bytes(other)
    (tmp_path / "drawing.svg").write_bytes(SVG)
    short = hashlib.sha256(photo).hexdigest()[:12]
    server = make_server()
    child = spawn("--base-url", server.base_url, "-a", str(tmp_path / "photo.png"))  # type: ignore[operator]
    # -a on the command line: attached to the first message, and said so.
    child.expect_exact(f"1. image/png, {len(photo)} bytes, sha256 {short}")
    child.expect_exact(PROMPT_READY)
    child.sendline("/help")
    child.expect_exact("/attach clear")
    child.expect_exact(PROMPT_READY)
    child.sendline(f"/attach '{tmp_path / 'other image.jpg'}'")  # quoted, with a space
    child.expect_exact(f"Attached other image.jpg: image/jpeg, {len(other)} bytes")
    child.expect_exact("2 images go with the next message")
    child.expect_exact(PROMPT_READY)
    child.sendline(f"/attach {tmp_path / 'drawing.svg'}")
    child.expect_exact("Error: attachment drawing.svg is SVG or other markup")
    child.expect_exact("nothing attached")
    child.expect_exact(PROMPT_READY)
    child.sendline(f"/attach {tmp_path / 'missing.png'}")
    child.expect_exact("No such file or directory; nothing attached")
    child.expect_exact(PROMPT_READY)
    child.sendline("/attach")
    child.expect_exact("Attached to the next message: 2 images")
    child.expect_exact(PROMPT_READY)
    child.sendline("look")
    # rich renders the echo's lines as one Markdown paragraph, wrapped at the screen's width.
    for number, (data, kind) in enumerate([(photo, "image/png"), (other, "image/jpeg")], 1):
        words = f"[image {number}: {described(data, kind)}]".split()
        child.expect(r"\s+".join(re.escape(word) for word in words))
    child.expect_exact(PROMPT_READY)
    child.sendline("/attach")  # sent: nothing attached any more
    child.expect_exact("Nothing attached.")
    child.expect_exact(PROMPT_READY)
    child.sendline(f"/attach {tmp_path / 'photo.png'}")
    child.expect_exact("1 image goes with the next message")
    child.expect_exact(PROMPT_READY)
    child.sendline("/attach clear")
    child.expect_exact("1 image no longer attached.")
    child.expect_exact(PROMPT_READY)
    child.sendline("plain")
    child.expect_exact(PROMPT_READY)
    answer = child.before or ""
    assert "echo backend" in answer and "plain" in answer and "[image" not in answer
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    with sqlite3.connect(gprochat_home / "logs.db") as db:
        links = db.execute("SELECT exchange_id, position, sha256 FROM exchange_attachments "
                           "ORDER BY exchange_id, position").fetchall()
    first_id = links[0][0]
    assert links == [(first_id, 0, hashlib.sha256(photo).hexdigest()),
                     (first_id, 1, hashlib.sha256(other).hexdigest())]


def test_attached_images_stay_attached_when_the_message_gets_no_answer(
    make_server: ServerFactory, spawn: object, tmp_path: Path
) -> None:
    from gprochat.server import ServerConfig

    from .image_samples import png

    (tmp_path / "photo.png").write_bytes(png(seed=32))
    server = make_server(ServerConfig(passwords=("right",)))
    child = spawn("--base-url", server.base_url, "--password", "wrong",  # type: ignore[operator]
                  "--max-retries", "0", "-a", str(tmp_path / "photo.png"))
    child.expect_exact(PROMPT_READY)
    child.sendline("look")
    child.expect("Error: .*Invalid password")
    child.expect_exact("1 image still attached to the next message")
    child.expect_exact(PROMPT_READY)
    child.sendline("/attach")
    child.expect_exact("Attached to the next message: 1 image")
    child.expect_exact(PROMPT_READY)
    child.sendline("/exit")
    child.expect(pexpect.EOF)
