"""The hostile suite's servers: real ``gprochat serve --port 0`` processes on loopback.

Two are started once per session and shared by every probe:

- ``hostile``: a locked site (two site passwords, an API key, its own secret key),
  no rate limit (the probes would exhaust it), small limits so that the boundaries
  are cheap to reach, and short HTTP timeouts so that slow-client probes end fast.
- ``limited``: a site locked by a password only, with a tight rate limit, for the
  rate-limit probes and the gateway's "site password as a bearer token".

Each server's stdout and stderr go to a log file. After each probe the part of the
log it caused must hold no traceback; at the end of the session the server must
still answer a good request, and its RSS growth over the run is reported.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from ...processes import GPROCHAT, ServeProcess, clean_env
from . import probes
from .rawhttp import exchange, request

#: HTTP settings the suite's servers are started with, when the server has the options:
#: short timeouts, so that the slow-client probes finish in seconds; limits of our own,
#: so that the boundary probes do not depend on the defaults.
HTTP_FLAGS = {
    "--header-timeout": probes.HEADER_TIMEOUT,
    "--body-idle-timeout": probes.BODY_IDLE_TIMEOUT,
    "--body-timeout": probes.BODY_TIMEOUT,
    "--keepalive-timeout": probes.KEEP_ALIVE_TIMEOUT,
    "--max-url-bytes": probes.MAX_URL_BYTES,
    "--max-header-count": probes.MAX_HEADER_COUNT,
    "--max-header-bytes": probes.MAX_HEADER_BYTES,
}


#: Lines for the end of the session's report (the RSS figures).
REPORT: list[str] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in REPORT:
        terminalreporter.write_line(line)


class ServedProcess(ServeProcess):
    """One ``gprochat serve`` process (the shared ``ServeProcess``): a name, its RSS at start."""

    def __init__(self, name: str, *args: str, log_path: Path) -> None:
        self.name = name
        self.rss_start = 0
        super().__init__(*args, log_path=log_path, timeout=30)

    def log(self, start: int = 0) -> str:
        return self.output(start)

    def rss(self) -> int:
        return int(psutil.Process(self.process.pid).memory_info().rss)


def _served_options() -> str:
    return subprocess.run(
        [*GPROCHAT, "serve", "--help"], env=clean_env(), capture_output=True, text=True, timeout=60
    ).stdout


def _start(name: str, args: list[str], log_dir: Path, help_text: str) -> ServedProcess:
    """``gprochat serve --port 0``: the port is read from the start-up line, logged once bound."""
    for flag, value in HTTP_FLAGS.items():
        if re.search(rf"{flag}\b", help_text):
            args = [*args, flag, str(value)]
    served = ServedProcess(name, "--log-format", "text", *args, log_path=log_dir / f"{name}.log")
    [answer] = asyncio.run(exchange(served.port, request("GET", "/healthz"), timeout=10))
    assert answer.status == 200, answer
    served.rss_start = served.rss()
    return served


def _stop(served: ServedProcess) -> None:
    served.stop(timeout=15)


@pytest.fixture(scope="session")
def served_options() -> str:
    """``gprochat serve --help``: which options this server has."""
    return _served_options()


@pytest.fixture(scope="session")
def hostile(tmp_path_factory: pytest.TempPathFactory, served_options: str) -> Iterator[ServedProcess]:
    served = _start("hostile", probes.HOSTILE_ARGS, tmp_path_factory.mktemp("hostile"), served_options)
    try:
        yield served
        _finish(served)
    finally:
        _stop(served)


@pytest.fixture(scope="session")
def limited(tmp_path_factory: pytest.TempPathFactory, served_options: str) -> Iterator[ServedProcess]:
    served = _start("limited", probes.LIMITED_ARGS, tmp_path_factory.mktemp("limited"), served_options)
    try:
        yield served
        served.assert_alive()
        assert "Traceback" not in served.log(), served.log()[-5000:]
    finally:
        _stop(served)


def _finish(served: ServedProcess) -> None:
    """After every probe: alive, a good request answered, no traceback, RSS reported."""
    served.assert_alive()
    answer = asyncio.run(probes.good_generate_answer(served.port))
    assert answer.status == 200 and answer.body, answer
    rss_end = served.rss()
    growth = rss_end - served.rss_start
    line = (
        f"hostile suite: server RSS {served.rss_start / 2**20:.1f} MiB at start, "
        f"{rss_end / 2**20:.1f} MiB after the probes (growth {growth / 2**20:+.1f} MiB)"
    )
    REPORT.append(line)
    log = served.log()
    assert "Traceback" not in log, log[log.index("Traceback") - 2000:][:8000]


@pytest.fixture
def server(hostile: ServedProcess) -> Iterator[ServedProcess]:
    """The shared hostile server; fails the probe if its log grew a traceback meanwhile."""
    hostile.assert_alive()
    start = hostile.log_size()
    yield hostile
    time.sleep(0.05)  # a traceback is logged just after the answer that caused it
    hostile.assert_alive()
    caused = hostile.log(start)
    assert "Traceback" not in caused, caused[:8000]
