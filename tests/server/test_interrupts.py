"""Ctrl-C from a terminal on ``gprochat serve --workers 2`` at the awkward moments.

A terminal sends SIGINT to its whole foreground process group: the process manager,
the workers, and multiprocessing's resource tracker. Each test starts the command in a
group of its own (``new_session``: pytest is not in it), sends SIGINT to that group at
a moment chosen by an event (a log line, a worker process appearing), and asserts the
exit status docs/server.md promises (0 after one Ctrl-C, 130 after a second), no
traceback from any process, and no process of the group left behind.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ..processes import ServeProcess, serve_process

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")

#: Seconds the group may take to be gone once the manager has exited (a busy machine).
GONE_TIMEOUT = 30.0
NOISE = ("Traceback", "KeyboardInterrupt", "Fatal Python error", "CancelledError")


def _group(pgid: int) -> dict[int, str]:
    """The live processes of process group ``pgid``: pid -> command line."""
    members = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:  # ended meanwhile
            continue
        state, _ppid, group = stat.rsplit(")", 1)[1].split()[:3]
        if int(group) == pgid and state != "Z":
            members[int(entry)] = cmdline.replace(b"\0", b" ").decode(errors="replace")
    return members


def _is_worker(cmdline: str) -> bool:
    # A worker runs multiprocessing's spawn_main (the resource tracker does not).
    return "spawn_main" in cmdline


def _until(condition: Callable[[], bool], what: str, server: ServeProcess, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not seen in {timeout} s\n{server.output()}"
        time.sleep(0.005)


def _finish(server: ServeProcess) -> tuple[int, str]:
    """The exit status and log once the group has ended; fails if a process of it is left."""
    status = server.wait(60)
    deadline = time.monotonic() + GONE_TIMEOUT
    while _group(server.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = _group(server.pid)
    if left:
        os.killpg(server.pid, signal.SIGKILL)  # our own group: nothing outlives the test
    output = server.output()
    assert not left, f"left running after the manager exited: {left}\n{output}"
    return status, output


def _assert_quiet(output: str) -> None:
    for noise in NOISE:
        assert noise not in output, output


def _manager_forced_exit(output: str) -> bool:
    """Whether the process manager took a second Ctrl-C (its line names the workers)."""
    entries = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    return any(e.get("event") == "forced_exit" and "workers" in e for e in entries)


def test_ctrl_c_at_the_start_up_line_is_a_clean_exit_0() -> None:
    # The line comes before the workers are spawned (and while they are, on a busy machine).
    with serve_process("--workers", "2", ready="line", new_session=True) as server:
        server.interrupt(group=True)
        status, output = _finish(server)
    assert status == 0, output
    _assert_quiet(output)


def test_ctrl_c_as_a_worker_starts_is_a_clean_exit_0() -> None:
    # The first worker has just been exec'd: its interpreter is starting (importing
    # ``site``, then our package), the second may still be being spawned.
    with serve_process("--workers", "2", ready="line", new_session=True) as server:
        _until(lambda: any(map(_is_worker, _group(server.pid).values())), "a worker process", server)
        server.interrupt(group=True)
        status, output = _finish(server)
    assert status == 0, output
    _assert_quiet(output)


def test_ctrl_c_again_and_again_while_the_workers_start() -> None:
    # A Ctrl-C each time the group changes (a process appears, a line is logged) until
    # the command ends: whichever moment of a worker's start each one hits, nothing but
    # log lines. Two that come while the manager spawns (SIGINT blocked) count as one.
    with serve_process("--workers", "2", ready="line", new_session=True) as server:
        seen: set[int] = set()
        size = -1
        sent = 0
        while server.process.poll() is None:
            members, now = set(_group(server.pid)), server.log_size()
            if not members <= seen or now != size:
                seen |= members
                size = now
                try:
                    server.interrupt(group=True)
                    sent += 1
                except ProcessLookupError:  # the group has just ended
                    break
            time.sleep(0.002)
        status, output = _finish(server)
    assert sent >= 2, output
    # One Ctrl-C handled by the manager: 0; a second one: 130, with its line (a third,
    # and any once the workers are gone, changes nothing).
    assert status == (130 if _manager_forced_exit(output) else 0), output
    _assert_quiet(output)


def test_ctrl_c_at_a_worker_as_it_finishes_is_ignored_quietly() -> None:
    # After one Ctrl-C each worker shuts down; once its server has finished (uvicorn has
    # put the handler it found back), more come: a key held down, or the manager's own.
    with serve_process("--workers", "2", new_session=True) as server:
        server.interrupt(group=True)
        finished = re.compile(r"Finished server process \[(\d+)\]")
        _until(lambda: finished.search(server.output()) is not None, "a worker finishing", server)
        match = finished.search(server.output())
        assert match is not None
        worker = int(match.group(1))
        while worker in _group(server.pid):
            try:
                os.kill(worker, signal.SIGINT)
            except ProcessLookupError:
                break
            time.sleep(0.001)
        status, output = _finish(server)
    # The manager had one Ctrl-C: a clean exit.
    assert status == 0, output
    _assert_quiet(output)
