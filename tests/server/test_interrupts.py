"""Ctrl-C from a terminal on ``gprochat serve --workers 2`` at the awkward moments.

A terminal sends SIGINT to its whole foreground process group: the process manager,
the workers, and multiprocessing's resource tracker. Each test starts the command in a
group of its own (``new_session``: pytest is not in it), sends SIGINT to that group at
a moment chosen by an event (a log line, a worker process appearing), and asserts the
exit status docs/server.md promises (0 after one Ctrl-C, 130 after a second), no
traceback from any process, and no process of the group left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ..processes import ServeProcess, clean_env, serve_process

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
    # put back the handler it found), more come: a key held down, or the manager's own.
    with serve_process("--workers", "2", new_session=True) as server:
        _until(lambda: server.output().count("Application startup complete") == 2, "both workers up",
               server)
        pids = [int(pid) for pid in re.findall(r"Started server process \[(\d+)\]", server.output())]
        # pidfds: each names that process, never one that reuses its pid later.
        workers = {pid: os.pidfd_open(pid) for pid in pids}
        try:
            server.interrupt(group=True)
            finished = re.compile(r"Finished server process \[(\d+)\]")
            _until(lambda: finished.search(server.output()) is not None, "a worker finishing", server)
            match = finished.search(server.output())
            assert match is not None
            worker = workers[int(match.group(1))]
            # Ctrl-C after Ctrl-C until it has exited, so that one lands on each step of
            # its teardown (none if it was quicker than this test to see the line).
            with contextlib.suppress(ProcessLookupError):  # exited and reaped meanwhile
                while not select.select([worker], [], [], 0)[0]:  # readable once it has exited
                    for _ in range(20):
                        signal.pidfd_send_signal(worker, signal.SIGINT)
        finally:
            for descriptor in workers.values():
                os.close(descriptor)
        status, output = _finish(server)
    # The manager had one Ctrl-C: a clean exit.
    assert status == 0, output
    _assert_quiet(output)


WORKER_AFTER_ITS_SERVER = """
import functools
import signal

import uvicorn
from uvicorn._subprocess import get_subprocess  # how uvicorn's manager starts a worker

from gprochat.server.config import ServerConfig
from gprochat.server.runner import _uvicorn_config, bind_socket


def serve_then_interrupt(config, sockets):
    uvicorn.Server(config).run(sockets)  # limit_max_requests=0: it ends once started
    handler = signal.getsignal(signal.SIGINT)
    print("after its server:", getattr(handler, "__name__", handler), flush=True)
    for _ in range(3):
        signal.raise_signal(signal.SIGINT)
    print("still running", flush=True)


if __name__ == "__main__":
    sock = bind_socket("127.0.0.1", 0)
    config = _uvicorn_config("gprochat.server.runner:app_from_environment", ServerConfig(),
                             factory=True, workers=2, limit_max_requests=0)
    worker = get_subprocess(config, functools.partial(serve_then_interrupt, config), [sock])
    worker.start()
    worker.join(60)
    print("exit code", worker.exitcode)
"""


def test_a_worker_ignores_ctrl_c_once_its_server_has_finished(tmp_path: Path) -> None:
    # The same moment as above, without racing for it: a worker started as uvicorn's
    # manager starts one, whose server serves and ends, then takes three Ctrl-Cs.
    # Python's handler there (uvicorn puts back the one it found) raised KeyboardInterrupt.
    script = tmp_path / "worker_after_its_server.py"
    script.write_text(WORKER_AFTER_ITS_SERVER)
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=clean_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.stdout.splitlines() == [
        "after its server: _interrupt_outside_the_server", "still running", "exit code 0",
    ], result.stdout + result.stderr
    _assert_quiet(result.stderr)


def test_the_workers_end_with_their_manager_killed_by_sigkill() -> None:
    # SIGKILL (or the OOM killer) leaves the manager no time to stop its workers: the
    # kernel sends each SIGTERM (prctl's parent-death signal), and they shut down.
    with serve_process("--workers", "2", new_session=True) as server:
        _until(lambda: server.output().count("Application startup complete") == 2, "both workers up",
               server)
        assert len([c for c in _group(server.pid).values() if _is_worker(c)]) == 2
        server.process.kill()
        status, output = _finish(server)
    assert status == -signal.SIGKILL, output
    _assert_quiet(output)
