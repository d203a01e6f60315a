"""Run ``gprochat`` commands as real processes: a served port, a CLI call.

The one way the tests start ``gprochat serve`` as a process is ``ServeProcess``
(``serve_process(...)`` as a context manager, ``served(...)`` when only the URL
matters). It asks for ``--port 0`` and reads the port the kernel chose from the
start-up line, so no test races another for a port; then it waits until ``/healthz``
answers 200 (with ``--workers``, the line comes before the workers listen). The
process's stdout and stderr go to one log file, read with ``output()``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Optional

GPROCHAT = [sys.executable, "-m", "gprochat.cli"]

#: How long a server may take to say it started and answer /healthz: generous, as CI
#: machines are busy (an idle one needs about a second).
START_TIMEOUT = 60.0

_STARTED = re.compile(r"serving on http://127\.0\.0\.1:(\d+)")


def free_port() -> int:
    """A loopback port nothing listens on now (for programs that cannot take ``--port 0``)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any GPROCHAT_* setting of the developer's, plus ``extra``.

    ``GPROCHAT_HOME`` stays: the tests point it at a temporary directory, so no test
    writes to the developer's conversation log. The echo backend unless ``extra`` names
    another: the default (``auto``) would load the local model in every process
    (tests/server/backends/test_local.py covers it).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPROCHAT_") or k == "GPROCHAT_HOME"}
    env["GPROCHAT_BACKEND"] = "echo"
    env.update(extra)
    return env


class ServeProcess:
    """``gprochat serve ARGS`` on 127.0.0.1, started and ready when the constructor returns.

    ``ready="healthz"`` (the default) waits for ``/healthz`` to answer 200;
    ``ready="line"`` only for the start-up line (a server whose health is not the
    point). ``log_path`` keeps the log in a file of the caller's (else a temporary
    file, removed by ``close()``). ``new_session`` starts it in a process group of its
    own, so ``interrupt(group=True)`` is a terminal's Ctrl-C (every process of the
    group gets SIGINT: with ``--workers``, the workers too). ``--host`` and ``--port``
    in ``args`` win over 127.0.0.1 and ``0``; with a port given (``port=`` or ``--port``)
    readiness is ``/healthz`` alone, the log's lines are not needed (a ``--log-level``
    above info, or a model loading, may keep the start-up line out).
    """

    def __init__(
        self,
        *args: str,
        env: Optional[dict[str, str]] = None,
        log_path: Optional[Path] = None,
        ready: str = "healthz",
        new_session: bool = False,
        timeout: float = START_TIMEOUT,
        port: int = 0,
    ) -> None:
        self.args = args
        command = [*GPROCHAT, "serve"]
        command += [] if "--host" in args else ["--host", "127.0.0.1"]
        command += [] if "--port" in args else ["--port", str(port)]
        given_port = args[args.index("--port") + 1] if "--port" in args else str(port)
        self._own_log = log_path is None
        if log_path is None:
            descriptor, name = tempfile.mkstemp(prefix="gprochat-serve-", suffix=".log")
            os.close(descriptor)
            log_path = Path(name)
        self.log_path = log_path
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [*command, *args], env=env or clean_env(), stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=new_session,
            )
        self.port = int(given_port)
        #: The start-up line (JSON logs: its fields; text logs: ``{"message": line}``).
        self.started: dict[str, Any] = {}
        try:
            self._wait_until_ready(ready, timeout)
        except BaseException:
            self.close()
            raise

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self, start: int = 0) -> str:
        """The log from byte ``start`` on (stdout and stderr, in the order written)."""
        with self.log_path.open("rb") as log:
            log.seek(start)
            return log.read().decode("utf-8", "replace")

    def log_size(self) -> int:
        return self.log_path.stat().st_size

    def assert_alive(self) -> None:
        assert self.process.poll() is None, (
            f"gprochat serve {' '.join(self.args)} exited with {self.process.returncode}:\n"
            f"{self.output()[-3000:]}"
        )

    def find_started(self) -> bool:
        """Whether the start-up line is in the log yet (then ``started`` and ``port`` are set)."""
        for line in self.output().splitlines():
            found = _STARTED.search(line)
            if found is None:
                continue
            self.started = json.loads(line) if line.startswith("{") else {"message": line}
            self.port = self.port or int(found.group(1))
            return True
        return False

    def _wait_until_ready(self, ready: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not (self.port and ready == "healthz") and not self.find_started():
            self.assert_alive()
            assert time.monotonic() < deadline, f"no start-up line in {timeout} s:\n{self.output()}"
            time.sleep(0.05)
        while ready == "healthz":
            self.assert_alive()
            try:
                with urllib.request.urlopen(self.base_url + "/healthz", timeout=2) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                assert time.monotonic() < deadline, f"/healthz not 200 in {timeout} s:\n{self.output()}"
            time.sleep(0.05)

    def interrupt(self, *, group: bool = False) -> None:
        """SIGINT to the process (``group``: to its process group, as a terminal's Ctrl-C)."""
        if group:
            os.killpg(self.process.pid, signal.SIGINT)
        else:
            self.process.send_signal(signal.SIGINT)

    def wait(self, timeout: float = 20) -> int:
        return self.process.wait(timeout=timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        """Send ``sig`` if it still runs, wait up to ``timeout`` s, then SIGKILL; the exit status.

        The log stays readable until ``close()``.
        """
        try:
            if self.process.poll() is None:
                self.process.send_signal(sig)
            return self.process.wait(timeout=timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()

    def close(self) -> None:
        """Stop it (SIGTERM) if it still runs, and remove the log file if it is ours."""
        try:
            ServeProcess.stop(self)  # this class's: a subclass's stop() may close()
        finally:
            if self._own_log:
                self.log_path.unlink(missing_ok=True)
                self._own_log = False

    def __enter__(self) -> ServeProcess:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@contextmanager
def serve_process(*args: str, **options: Any) -> Iterator[ServeProcess]:
    """``with serve_process(ARGS) as server:`` a ready ``ServeProcess``, stopped afterwards."""
    with ServeProcess(*args, **options) as server:
        yield server


@contextmanager
def served(*args: str, env: Optional[dict[str, str]] = None, timeout: float = START_TIMEOUT) -> Iterator[str]:
    """``gprochat serve ARGS`` on a free port; yields its base URL, stops it afterwards.

    Ready when ``/healthz`` answers 200, whatever the log says (``--config`` files and
    environments may set any log level).
    """
    with ServeProcess(*args, env=env, timeout=timeout, port=free_port()) as server:
        yield server.base_url


def stop_process(process: subprocess.Popen[Any], timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL if it is still running after ``timeout`` seconds."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def run_cli(*args: str, input: Optional[str] = None, env: Optional[dict[str, str]] = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``gprochat ARGS`` to completion, capturing stdout and stderr as text."""
    return subprocess.run(
        [*GPROCHAT, *args], input=input, env=env or clean_env(), capture_output=True,
        text=True, timeout=timeout,
    )
