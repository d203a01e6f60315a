"""Processes: start a benchmark server on a loopback socket we own, wait for it, stop it."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Optional

__all__ = [
    "read_head",
    "serve_connections",
    "until_closed",
    "ServerProcess", "raise_nofile_limit", "python_cmd", "child_env", "free_port", "stop_process",
    "wait_until_ready", "REPO_ROOT",
]


def raise_nofile_limit(wanted: int = 16384) -> int:
    """Lift RLIMIT_NOFILE's soft limit towards ``wanted`` (B4 opens a socket per stream)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def free_port() -> int:
    """A loopback port nothing listens on now, for a peer that cannot be handed a socket."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def python_cmd(module: str, *args: str) -> list[str]:
    """``python -m module args`` with this interpreter."""
    return [sys.executable, "-m", module, *args]


class ServerProcess:
    """``python -m benchmarks.servers KIND`` on a listening socket handed down as an fd.

    The harness binds 127.0.0.1:0 itself, so there is no race for the port, and the
    child serves on that inherited socket. ``options`` go to the child as JSON.
    """

    def __init__(self, kind: str, **options: Any) -> None:
        self.kind = kind
        self.options = options
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(4096)
        self.port: int = self._socket.getsockname()[1]
        self.process: Optional[subprocess.Popen[bytes]] = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = 30.0) -> ServerProcess:
        fd = self._socket.fileno()
        self.process = subprocess.Popen(
            python_cmd("benchmarks.servers", self.kind, str(fd), json.dumps(self.options)),
            pass_fds=(fd,),
            stdin=subprocess.DEVNULL,
            env=child_env(),
        )
        try:
            wait_until_ready(self.process, self.base_url + "/healthz", timeout, interval=0.05)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"benchmark server {self.kind!r} did not answer /healthz") from None
        except ChildProcessError:
            raise RuntimeError(f"benchmark server {self.kind!r} exited at start; see above") from None
        return self

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
        self._socket.close()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.stop()


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def wait_until_ready(
    process: subprocess.Popen[Any], url: str, timeout: float, *, interval: float
) -> None:
    """Poll ``url`` until it answers 200; ChildProcessError if ``process`` exits first,
    TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise ChildProcessError(process.returncode)
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(url)
        time.sleep(interval)


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


def child_env() -> dict[str, str]:
    """The environment for child processes: ``benchmarks`` importable, warnings quiet.

    (g4f 0.4.0.0 subclasses aiohttp's ClientSession, which warns on import.)
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO_ROOT, env.get("PYTHONPATH")]))
    env.setdefault("PYTHONWARNINGS", "ignore")
    return env


async def read_head(reader: asyncio.StreamReader) -> tuple[bytes, int]:
    """One HTTP/1.1 request head from ``reader`` and its ``Content-Length`` (0 if none).

    For the harness's bare asyncio servers (a baseline, a scripted upstream): they read
    the body themselves, whole or as it arrives.
    """
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return head, length


Connection = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def until_closed(handle: Connection) -> Connection:
    """``handle`` for one connection, ended quietly when the peer goes, the socket closed."""

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handle(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return connection


async def serve_connections(handle: Connection, fd: int) -> None:
    """Serve ``handle`` on the listening socket ``fd`` (each connection ``until_closed``)."""
    server = await asyncio.start_server(until_closed(handle), sock=socket.socket(fileno=fd))
    async with server:
        await server.serve_forever()
