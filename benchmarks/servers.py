"""The servers the benchmarks talk to, each run in its own process by ``ServerProcess``.

``python -m benchmarks.servers KIND FD OPTIONS_JSON`` serves on the inherited listening
socket FD:

- ``gprochat``: our app (``gprochat.server.create_app``) with the echo backend; OPTIONS
  ``{"config": {...ServerConfig fields...}, "echo": {...EchoBackend options...}}``.
  Fields this version of ServerConfig does not have are dropped, with a note on stderr,
  so the harness runs against main before and after the guard / gateway land.
- ``bare``: the floor for B3, a FastAPI route on the same uvicorn (stock protocol) that answers
  ``/api/generate`` with the same bytes and checks nothing.
- ``bytes``: a raw asyncio HTTP/1.1 server that streams ``size`` bytes of UTF-8 text in
  ``chunk``-byte chunked-encoding chunks (B2's 50 MB source; it must never be the
  bottleneck, so it writes pre-built bytes).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import socket
import sys
from typing import Any

from ._proc import raise_nofile_limit, read_head, serve_connections

# Multi-byte characters on purpose: chunk boundaries fall inside them, so the
# clients' incremental decoders do real work.
TEXT_UNIT = "Grüße, naïve café — 日本語のテキスト ✓ streaming text 0123456789. "


def _run_uvicorn(app: Any, fd: int) -> None:
    import uvicorn

    sock = socket.socket(fileno=fd)
    config = uvicorn.Config(app, lifespan="on", access_log=False, log_level="warning")
    server = uvicorn.Server(config)
    asyncio.run(server.serve(sockets=[sock]))


def _run_gprochat(app: Any, fd: int) -> None:
    """Our app on our HTTP layer (server/http.py), as ``gprochat serve`` runs it."""
    try:
        from gprochat.server.runner import serve_socket
    except ImportError:  # a version before the HTTP layer: plain uvicorn
        _run_uvicorn(app, fd)
        return
    serve_socket(app, app.state.config, socket.socket(fileno=fd))


def gprochat_app(options: dict[str, Any]) -> Any:
    from gprochat.server import ServerConfig, create_app
    from gprochat.server.backends import EchoBackend

    known = {field.name for field in dataclasses.fields(ServerConfig)}
    wanted = dict(options.get("config", {}))
    dropped = sorted(set(wanted) - known)
    if dropped:
        print(f"benchmarks.servers: this ServerConfig has no {dropped}; ignored", file=sys.stderr)
    config = ServerConfig(**{key: value for key, value in wanted.items() if key in known})
    return create_app(config, backend=EchoBackend(**options.get("echo", {})))


def bare_app(options: dict[str, Any]) -> Any:
    from fastapi import FastAPI, Response

    body = options["body"].encode()
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.post("/api/generate")
    async def generate() -> Response:
        return Response(body, media_type="text/plain; charset=utf-8")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def _chunked_payload(size: int, chunk: int) -> list[bytes]:
    unit = TEXT_UNIT.encode()
    data = (unit * (size // len(unit) + 1))[:size]
    # Cut back to a whole character so the answer as a whole is valid UTF-8.
    while (data and (data[-1] & 0xC0) == 0x80) or (data and data[-1] >= 0xC0):
        data = data[:-1]
    frames = []
    for start in range(0, len(data), chunk):
        piece = data[start : start + chunk]
        frames.append(b"%x\r\n%b\r\n" % (len(piece), piece))
    return frames


async def _serve_bytes(fd: int, options: dict[str, Any]) -> None:
    frames = _chunked_payload(int(options["size"]), int(options.get("chunk", 65536)))

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head, length = await read_head(reader)
            if length:
                await reader.readexactly(length)
            if head.startswith(b"GET /healthz"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
                continue
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/plain; charset=utf-8\r\n"
                b"transfer-encoding: chunked\r\n\r\n"
            )
            for frame in frames:
                writer.write(frame)
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()

    await serve_connections(handle, fd)


def _log_gc_pauses() -> None:
    """Diagnostics: print every garbage collection over 5 ms to stderr."""
    import gc
    import time

    started: list[float] = [0.0]

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        elif (pause := time.perf_counter() - started[0]) > 0.005:
            print(
                f"gc gen{info['generation']}: {pause * 1000:.1f} ms, {len(gc.get_objects())} objects, "
                f"{info['collected']} collected",
                file=sys.stderr,
            )

    gc.callbacks.append(callback)


def main() -> None:
    # Load generators hang up at the end of a round, mid-answer; asyncio's per-write
    # "socket.send() raised exception." warnings would flood the terminal.
    logging.getLogger("asyncio").setLevel(logging.ERROR)
    kind, fd_text, options_json = sys.argv[1:4]
    fd, options = int(fd_text), json.loads(options_json)
    raise_nofile_limit()
    if os.environ.get("GPROCHAT_BENCH_GC_LOG"):
        _log_gc_pauses()
    if kind == "gprochat":
        from gprochat.server.runner import freeze_startup_objects

        app = gprochat_app(options)
        freeze_startup_objects()  # as `gprochat serve` does
        _run_gprochat(app, fd)
    elif kind == "bare":
        _run_uvicorn(bare_app(options), fd)
    elif kind == "bytes":
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_serve_bytes(fd, options))
    else:
        raise SystemExit(f"unknown server kind {kind!r}: gprochat, bare or bytes")


if __name__ == "__main__":
    main()
