"""B1, client, short requests: sequential requests, a short reply, three clients.

ours  = ``gprochat.providers.GPROChat.create_async`` (whatever session policy it has),
g4f   = g4f 0.4.0.0's ``g4f.Provider.not_working.GPROChat`` with ``api_endpoint`` pointed
        at our server (a new ClientSession, so a new connection, per call),
floor = a raw aiohttp loop: one shared session, sign, post, ``iter_any`` + decode.

Each client is a long-lived worker process (so its CPU time is its own and the
server's is not in it) that runs batches on command; the harness interleaves the
batches, rotating the order every round. Every request carries a distinct message,
so each is freshly signed and no replay guard can object.
"""

from __future__ import annotations

import asyncio
import codecs
import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, Optional

from ._proc import ServerProcess, child_env
from ._report import Row, paired_ratio

__all__ = ["run"]

SECRET = "2BC120D4-BB36-1B60-26DE-DB630472A3D8"
Request = Callable[[str], Awaitable[str]]
_closers: list[Callable[[], Awaitable[Any]]] = []


# -- the three clients, as run inside a worker ------------------------------------------


async def _ours(base_url: str) -> Request:
    from gprochat.providers import GPROChat

    async def request(message: str) -> str:
        return await GPROChat.create_async(
            "", [{"role": "user", "content": message}], base_url=base_url
        )

    return request


async def _g4f(base_url: str) -> Request:
    from g4f.Provider.not_working import GPROChat  # type: ignore[import-not-found]

    GPROChat.api_endpoint = base_url + "/api/generate"

    async def request(message: str) -> str:
        chunks = []
        async for chunk in GPROChat.create_async_generator(
            "", [{"role": "user", "content": message}]
        ):
            chunks.append(chunk)
        return "".join(chunks)

    return request


async def _floor(base_url: str) -> Request:
    import aiohttp

    session = aiohttp.ClientSession()
    _closers.append(session.close)
    url = base_url + "/api/generate"
    headers = {"content-type": "text/plain;charset=UTF-8", "accept": "*/*"}

    async def request(message: str) -> str:
        timestamp = int(time.time() * 1000)
        sign = hashlib.sha256(f"{timestamp}:{message}:{SECRET}".encode()).hexdigest()
        body = json.dumps(
            {
                "messages": [{"role": "user", "parts": [{"text": message}]}],
                "time": timestamp,
                "pass": None,
                "sign": sign,
            }
        ).encode()
        async with session.post(url, data=body, headers=headers) as response:
            response.raise_for_status()
            decoder = codecs.getincrementaldecoder("utf-8")()
            parts = [decoder.decode(chunk) async for chunk in response.content.iter_any()]
            parts.append(decoder.decode(b"", final=True))
            return "".join(parts)

    return request


CLIENTS: dict[str, Callable[[str], Awaitable[Request]]] = {
    "ours": _ours,
    "g4f": _g4f,
    "floor": _floor,
}


def worker(kind: str, base_url: str) -> None:
    """Run batches on command: ``run N`` on stdin -> one JSON line on stdout."""
    loop = asyncio.new_event_loop()
    request = loop.run_until_complete(CLIENTS[kind](base_url))
    counter = 0

    async def batch(count: int) -> int:
        nonlocal counter
        errors = 0
        for _ in range(count):
            counter += 1
            message = f"ping {kind} {counter}"
            try:
                reply = await request(message)
                if not reply.endswith(message):
                    errors += 1
            except Exception:
                errors += 1
        return errors

    loop.run_until_complete(batch(20))  # warm-up: imports, connections, caches
    print("ready", flush=True)
    for line in sys.stdin:
        command, _, arg = line.partition(" ")
        if command != "run":
            break
        count = int(arg)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        errors = loop.run_until_complete(batch(count))
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        print(json.dumps({"n": count, "wall": wall, "cpu": cpu, "errors": errors}), flush=True)
    for close in _closers:
        loop.run_until_complete(close())
    loop.close()


# -- the harness side --------------------------------------------------------------------


class _Worker:
    def __init__(self, kind: str, base_url: str, python: str) -> None:
        self.kind = kind
        self.process = subprocess.Popen(
            [python, "-m", "benchmarks.b1_short", kind, base_url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=child_env(),
        )
        assert self.process.stdout is not None
        ready = self.process.stdout.readline().strip()
        if ready != "ready":
            raise RuntimeError(f"B1 {kind} worker failed to start (said {ready!r})")

    def run(self, count: int) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(f"run {count}\n")
        self.process.stdin.flush()
        return dict(json.loads(self.process.stdout.readline()))

    def close(self) -> None:
        if self.process.stdin:
            self.process.stdin.close()
        self.process.wait(timeout=30)


def run(quick: bool, g4f_python: Optional[str], server_config: dict[str, Any]) -> list[Row]:
    """Interleaved rounds of ``count`` sequential requests per client."""
    rounds, count = (3, 150) if quick else (7, 600)
    kinds = ["ours", "floor"] + (["g4f"] if g4f_python else [])
    results: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
    with ServerProcess("gprochat", config=server_config) as server:
        workers = {
            kind: _Worker(
                kind,
                server.base_url,
                g4f_python if kind == "g4f" and g4f_python else sys.executable,
            )
            for kind in kinds
        }
        try:
            for index in range(rounds):
                order = kinds[index % len(kinds) :] + kinds[: index % len(kinds)]
                for kind in order:
                    results[kind].append(workers[kind].run(count))
        finally:
            for client in workers.values():
                client.close()

    def rps(kind: str) -> list[float]:
        return [r["n"] / r["wall"] for r in results[kind]]

    def cpu_us(kind: str) -> list[float]:
        return [r["cpu"] / r["n"] * 1e6 for r in results[kind]]

    def median(values: list[float]) -> float:
        return sorted(values)[len(values) // 2]

    errors = {kind: sum(r["errors"] for r in results[kind]) for kind in kinds}
    note = f"{rounds} rounds x {count} requests; errors: " + ", ".join(
        f"{k} {v}" for k, v in errors.items()
    )
    rows = [
        Row(
            "B1",
            "req/s, ours vs floor",
            median(rps("ours")),
            median(rps("floor")),
            "req/s",
            paired_ratio(rps("ours"), rps("floor")),
            0.9,
            "higher",
            ">= 0.9x",
            note=note,
        ),
        Row(
            "B1",
            "client CPU/request, ours vs floor",
            median(cpu_us("ours")),
            median(cpu_us("floor")),
            "µs",
            paired_ratio(cpu_us("ours"), cpu_us("floor")),
            1.15,
            "lower",
            "<= 1.15x",
        ),
    ]
    if g4f_python:
        rows += [
            Row(
                "B1",
                "req/s, ours vs g4f",
                median(rps("ours")),
                median(rps("g4f")),
                "req/s",
                paired_ratio(rps("ours"), rps("g4f")),
                1.2,
                "higher",
                ">= 1.2x (clearly ahead)",
            ),
            Row(
                "B1",
                "client CPU/request, ours vs g4f",
                median(cpu_us("ours")),
                median(cpu_us("g4f")),
                "µs",
                paired_ratio(cpu_us("ours"), cpu_us("g4f")),
            ),
        ]
    if any(errors.values()):
        rows[0].note += "  (ERRORS: the numbers are suspect)"
    return rows


if __name__ == "__main__":
    worker(sys.argv[1], sys.argv[2])
