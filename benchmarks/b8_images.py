"""B8, images: a 5 MiB image through ``/api/generate`` and ``/v1/chat/completions``.

One server process (our app, the gemini backend) forwards every request to an upstream
in this process that reads the whole body and answers one short Gemini event. Per
request we read the server process's CPU time (``/proc/PID/task/*/schedstat``: every
thread, nanoseconds) and its peak memory growth (``VmHWM`` after resetting it through
``/proc/PID/clear_refs``, minus ``VmRSS`` before). Compared with, in the same rounds:

- **a plain copy**: a minimal asyncio process (``relay`` below) that receives the
  same request bytes and writes them on to the same upstream as they arrive, checking
  nothing: the floor for moving those bytes through a process;
- **the same bytes as text**: the image's base64 sent as the message's text through
  the same route, backend and upstream (so the difference is what images cost).

The image is 5 MiB of random bytes behind a PNG signature (the server checks the magic
number only). ``/v1`` sends it as an OpenAI ``image_url`` part with a data URL; a
server whose gateway does not take images yet refuses it, and the row says so.
The server runs with ``MALLOC_MMAP_THRESHOLD_=131072`` so that glibc returns a freed
large block at once and each request's peak is its own (not hidden by a heap kept
from the previous one). That also makes every buffer over 128 KiB a fresh mapping whose
pages fault in one by one, on every request; a server left to glibc's defaults raises
its threshold after the first large block and reuses the memory. As a diagnostic, a
second server process with glibc's defaults takes the same image requests in the same
rounds (CPU only: its peak is not per request).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import random
import socket
import statistics
import subprocess
import sys
from collections.abc import Callable
from typing import Any, Optional

from ._proc import child_env, python_cmd, read_head, serve_connections, stop_process, wait_until_ready
from ._report import Row, paired_ratio

__all__ = ["run"]

IMAGE_BYTES = 5 * 1024 * 1024
API_KEY = "bench-key"
MODEL = "gemini-2.0-flash"
QUESTION = "What is in this picture?"
_ANSWER = (b'data: {"candidates": [{"content": {"parts": [{"text": "A picture."}], "role": "model"}, '
           b'"finishReason": "STOP", "index": 0}]}\r\n\r\n')


def image_bytes(size: int = IMAGE_BYTES) -> bytes:
    """``size`` bytes: a PNG signature, then random bytes (seeded: the same every run)."""
    return b"\x89PNG\r\n\x1a\n" + random.Random(8).randbytes(size - 8)


# -- the processes -------------------------------------------------------------------


class _Process:
    """``python -m benchmarks.b8_images KIND FD OPTIONS`` on a socket bound here."""

    def __init__(self, kind: str, options: dict[str, Any], *, mmap_threshold: bool = True) -> None:
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(64)
        self.base_url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        fd = self.socket.fileno()
        env = child_env()
        if mmap_threshold:
            env["MALLOC_MMAP_THRESHOLD_"] = "131072"
        else:
            env.pop("MALLOC_MMAP_THRESHOLD_", None)
        self.process = subprocess.Popen(
            python_cmd("benchmarks.b8_images", kind, str(fd), json.dumps(options)),
            pass_fds=(fd,), stdin=subprocess.DEVNULL, env=env)
        try:
            # 90 s: importing the app takes long on a machine busy with other benchmarks.
            wait_until_ready(self.process, self.base_url + "/healthz", 90, interval=0.05)
        except BaseException:
            self.stop()  # not left running when the harness gives up on it
            raise

    def cpu_ns(self) -> int:
        """CPU time of every thread of the process so far, in nanoseconds."""
        total = 0
        for task in os.listdir(f"/proc/{self.process.pid}/task"):
            try:
                with open(f"/proc/{self.process.pid}/task/{task}/schedstat") as stat:
                    total += int(stat.read().split()[0])
            except (FileNotFoundError, ProcessLookupError):
                pass  # a thread that ended meanwhile
        return total

    def reset_peak(self) -> int:
        """Reset the peak RSS to the current one; returns the current RSS in bytes."""
        with open(f"/proc/{self.process.pid}/clear_refs", "w") as clear:
            clear.write("5")
        return self._status("VmRSS")

    def peak(self) -> int:
        return self._status("VmHWM")

    def _status(self, field: str) -> int:
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError(f"no {field} in /proc/{self.process.pid}/status")

    def stop(self) -> None:
        stop_process(self.process)
        self.socket.close()


def _serve_gprochat(fd: int, options: dict[str, Any]) -> None:
    from gprochat.server import ServerConfig, create_app
    from gprochat.server.backends import GeminiBackend
    from gprochat.server.runner import freeze_startup_objects, serve_socket

    config = ServerConfig(**options["config"])
    app = create_app(config, backend=GeminiBackend(api_key="bench", base_url=options["upstream"]))
    freeze_startup_objects()
    serve_socket(app, config, socket.socket(fileno=fd))


async def _relay(fd: int, options: dict[str, Any]) -> None:
    """The plain copy: each request's body written on to the upstream as it arrives."""
    host, port = options["upstream"].removeprefix("http://").rsplit(":", 1)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head, length = await read_head(reader)
            if head.startswith(b"GET /healthz"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                continue
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
            up_writer.write(b"POST /relay HTTP/1.1\r\nHost: upstream\r\nConnection: close\r\n"
                            b"Content-Length: %d\r\n\r\n" % length)
            left = length
            while left:
                piece = await reader.read(min(left, 1 << 16))
                if not piece:
                    raise ConnectionError("client left")
                left -= len(piece)
                up_writer.write(piece)
                await up_writer.drain()
            answer = await up_reader.read()
            up_writer.close()
            writer.write(answer.replace(b"Connection: close", b"Connection: keep-alive"))
            await writer.drain()

    await serve_connections(handle, fd)


# -- the upstream, in this process --------------------------------------------------


async def _start_upstream() -> tuple[Any, str, list[int]]:
    """A Gemini-shaped upstream that reads each body whole and answers one event."""
    from aiohttp import web

    received: list[int] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        received.append(len(await request.read()))
        return web.Response(body=_ANSWER, content_type="text/event-stream")

    app = web.Application(client_max_size=1 << 30)
    app.router.add_route("POST", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}", received


# -- the requests ---------------------------------------------------------------------


def _generate_body(data: str, *, as_text: bool) -> bytes:
    """A signed /api/generate body with the image's base64 as an image part (or as text)."""
    from gprochat.protocol import DEFAULT_SECRET_KEY, generate_signature, signing_time

    when = signing_time()
    parts: list[dict[str, Any]]
    if as_text:
        parts = [{"text": "@@DATA@@"}]
        sign = generate_signature(when, data)
    else:
        parts = [{"text": QUESTION}, {"inline_data": {"mime_type": "image/png", "data": "@@DATA@@"}}]
        sign = generate_signature(when, QUESTION, DEFAULT_SECRET_KEY)
    skeleton = json.dumps({"messages": [{"role": "user", "parts": parts}], "time": when,
                           "pass": None, "sign": sign})
    return skeleton.replace("@@DATA@@", data).encode()


def _gateway_body(data: str) -> bytes:
    skeleton = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": [
        {"type": "text", "text": QUESTION},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,@@DATA@@"}},
    ]}]})
    return skeleton.replace("@@DATA@@", data).encode()


Measured = tuple[float, float, int, str]  # CPU ms, peak growth bytes, status, body start


async def _measure_one(session: Any, process: _Process, url: str, body: bytes,
                       headers: dict[str, str]) -> Measured:
    before = process.reset_peak()
    cpu = process.cpu_ns()
    async with session.post(url, data=body, headers=headers) as response:
        answer = await response.read()
        status = response.status
    await asyncio.sleep(0.05)  # the server's last bookkeeping after the answer
    cpu_ms = (process.cpu_ns() - cpu) / 1e6
    return cpu_ms, float(process.peak() - before), status, answer[:300].decode("utf-8", "replace")


VARIANTS = ("generate", "text", "gateway", "copy", "defaults")


async def _rounds(rounds: int, size: int) -> dict[str, list[Measured]]:
    import aiohttp

    raw = image_bytes(size)
    data = base64.b64encode(raw).decode()
    runner, upstream, _received = await _start_upstream()
    results: dict[str, list[Measured]] = {name: [] for name in VARIANTS}
    # keepalive_timeout: a server's kept-alive connection may idle for a whole round (five
    # requests to other processes, slow on a loaded machine): one closed by the server
    # just as the next image is sent fails that request with a broken pipe.
    config = {"rate_limit": None, "max_body_bytes": 0, "max_message_chars": 0,
              "max_image_bytes": 0, "api_keys": [API_KEY], "log_level": "warning",
              "keepalive_timeout": 120}
    server = relay = defaults = None
    try:
        server = await asyncio.to_thread(_Process, "gprochat", {"upstream": upstream, "config": config})
        relay = await asyncio.to_thread(_Process, "relay", {"upstream": upstream})
        defaults = await asyncio.to_thread(
            lambda: _Process("gprochat", {"upstream": upstream, "config": config}, mmap_threshold=False))
        plain = {"Content-Type": "text/plain;charset=UTF-8"}
        timeout = aiohttp.ClientTimeout(total=120)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            requests: dict[str, Callable[[], Any]] = {
                "generate": lambda: _measure_one(session, server, server.base_url + "/api/generate",
                                                 _generate_body(data, as_text=False), plain),
                "text": lambda: _measure_one(session, server, server.base_url + "/api/generate",
                                             _generate_body(data, as_text=True), plain),
                "gateway": lambda: _measure_one(
                    session, server, server.base_url + "/v1/chat/completions", _gateway_body(data),
                    {"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"}),
                "copy": lambda: _measure_one(session, relay, relay.base_url + "/api/generate",
                                             _generate_body(data, as_text=False), plain),
                "defaults": lambda: _measure_one(session, defaults, defaults.base_url + "/api/generate",
                                                 _generate_body(data, as_text=False), plain),
            }
            for name in VARIANTS:  # warm-up: connections, imports, first allocations
                await requests[name]()
            for index in range(rounds):
                order = list(VARIANTS) if index % 2 == 0 else list(reversed(VARIANTS))
                for name in order:
                    results[name].append(await requests[name]())
    finally:
        for process in (server, relay, defaults):
            if process is not None:
                process.stop()
        await runner.cleanup()
    return results


def run(quick: bool, server_config: Optional[dict[str, Any]] = None) -> list[Row]:
    rounds = 5 if quick else 15
    results = asyncio.run(_rounds(rounds, IMAGE_BYTES))
    for name in ("generate", "text", "copy", "defaults"):
        bad = [m for m in results[name] if m[2] != 200]
        if bad:
            raise RuntimeError(f"B8: {name} was refused: HTTP {bad[0][2]}: {bad[0][3]}")

    def cpu(name: str) -> list[float]:
        return [m[0] for m in results[name]]

    def growth(name: str) -> list[float]:
        return [m[1] / 2**20 for m in results[name]]

    mib = IMAGE_BYTES / 2**20
    note = f"{rounds} interleaved rounds, one {mib:g} MiB image (~{mib * 4 / 3:.1f} MiB of base64) each"
    rows = [
        Row("B8", "server CPU per request: /api/generate image vs a plain copy",
            statistics.median(cpu("generate")), statistics.median(cpu("copy")), "ms",
            paired_ratio(cpu("generate"), cpu("copy")), 2.0, "lower", "<= 2x", note=note),
        Row("B8", "diagnostic: /api/generate image, glibc's default allocator, vs a plain copy",
            statistics.median(cpu("defaults")), statistics.median(cpu("copy")), "ms",
            paired_ratio(cpu("defaults"), cpu("copy")), better="lower", target_text="-",
            note="a second server process without MALLOC_MMAP_THRESHOLD_ (large buffers reused)"),
        Row("B8", "diagnostic: /api/generate image vs the same bytes as text",
            statistics.median(cpu("generate")), statistics.median(cpu("text")), "ms",
            paired_ratio(cpu("generate"), cpu("text")), better="lower", target_text="-",
            note="the same route, backend and upstream; the text's signature hashes it all"),
        Row("B8", "server peak memory growth: /api/generate image vs the image's size",
            statistics.median(growth("generate")), mib, "MiB",
            [g / mib for g in growth("generate")], 3.0, "lower", "<= 3x",
            note="VmHWM after the request minus VmRSS before it (reset per request)"),
    ]
    refused = [m for m in results["gateway"] if m[2] != 200]
    if refused:
        status, said = refused[0][2], refused[0][3]
        print(f"B8: /v1/chat/completions refused the image part (HTTP {status}): {said}")
        rows.append(Row("B8", f"/v1 image (SKIPPED: the gateway refused it, HTTP {status})",
                        float("nan"), float("nan"), "ms", [], 2.0, "lower", "<= 2x",
                        note=f"the gateway said: {said[:160]}"))
        return rows
    rows += [
        Row("B8", "server CPU per request: /v1 image vs a plain copy",
            statistics.median(cpu("gateway")), statistics.median(cpu("copy")), "ms",
            paired_ratio(cpu("gateway"), cpu("copy")), 2.0, "lower", "<= 2x", note=note),
        Row("B8", "server peak memory growth: /v1 image vs the image's size",
            statistics.median(growth("gateway")), mib, "MiB",
            [g / mib for g in growth("gateway")], 3.0, "lower", "<= 3x"),
    ]
    return rows


def main() -> None:
    kind, fd_text, options_json = sys.argv[1:4]
    fd, options = int(fd_text), json.loads(options_json)
    if kind == "gprochat":
        _serve_gprochat(fd, options)
    elif kind == "relay":
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_relay(fd, options))
    else:
        raise SystemExit(f"unknown kind {kind!r}: gprochat or relay")


if __name__ == "__main__":
    main()
