"""Run ``gprochat`` commands as real processes: a served port, a CLI call."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Optional

GPROCHAT = [sys.executable, "-m", "gprochat.cli"]


def free_port() -> int:
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


@contextmanager
def served(*args: str, env: Optional[dict[str, str]] = None, timeout: float = 20) -> Iterator[str]:
    """``gprochat serve ARGS`` on a free port; yields its base URL, stops it afterwards."""
    port = free_port()
    process = subprocess.Popen(
        [*GPROCHAT, "serve", "--host", "127.0.0.1", "--port", str(port), *args],
        env=env or clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                output = process.stdout.read().decode() if process.stdout else ""
                raise RuntimeError(f"gprochat serve exited with {process.returncode}:\n{output}")
            try:
                with urllib.request.urlopen(base_url + "/healthz", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield base_url
    finally:
        stop_process(process)
        if process.stdout:
            process.stdout.close()


def stop_process(process: subprocess.Popen[bytes], timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL if it is still running after ``timeout`` seconds."""
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
