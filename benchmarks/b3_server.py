"""B3, server, short requests: requests/s on ``/api/generate`` under concurrent load.

ours = our app (echo backend, the guard on as configured by the harness: its rate
       limit raised so that it is checked on every request but never trips),
bare = a FastAPI route on the same uvicorn returning the same bytes, no checks.

The load generator is wrk (one thread, 64 connections) with ``b3_load.lua`` when wrk
is on PATH, else a separate-process aiohttp generator. Every request carries a
distinct message, signed by the harness just before the round, so every signature is
fresh and unseen. Rounds alternate the two servers.

A second view, for a machine shared with other work (where requests per second swing
with the neighbours' load): each server process's CPU time per request over the same
rounds (``psutil``), as bare's over ours, so it reads like the req/s ratio.

Tail latency: each round's p99 (wrk's, or the aiohttp generator's), ours over bare's
in the same pair. A round starts with the generator opening its connections, so a
server slow to let new connections in shows here (docs/benchmarks.md, B3).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

from ._proc import ServerProcess, child_env, python_cmd
from ._report import Row, paired_ratio, percentile

__all__ = ["run"]

SECRET = "2BC120D4-BB36-1B60-26DE-DB630472A3D8"
PREFIX = "Echo from the built-in echo backend (no model behind it): "
LUA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "b3_load.lua")
CONNECTIONS = 64


def signed_body(message: str) -> str:
    timestamp = int(time.time() * 1000)
    sign = hashlib.sha256(f"{timestamp}:{message}:{SECRET}".encode()).hexdigest()
    return json.dumps(
        {
            "messages": [{"role": "user", "parts": [{"text": message}]}],
            "time": timestamp,
            "pass": None,
            "sign": sign,
        }
    )


def _wrk(base_url: str, seconds: float, tag: str, count: int) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".bodies", delete=False) as bodies:
        for index in range(count):
            bodies.write(signed_body(f"ping {tag}-{index:06d}") + "\n")
    try:
        out = subprocess.run(
            [
                "wrk",
                "-t1",
                f"-c{CONNECTIONS}",
                f"-d{seconds:.0f}s",
                "--latency",
                "-s",
                LUA,
                base_url + "/api/generate",
                "--",
                bodies.name,
            ],
            capture_output=True,
            text=True,
            timeout=seconds + 60,
        )
    finally:
        os.unlink(bodies.name)
    match = re.search(r"^\{.*\}$", out.stdout, re.M)
    if out.returncode != 0 or not match:
        raise RuntimeError(f"wrk failed:\n{out.stdout}\n{out.stderr}")
    result = dict(json.loads(match.group(0)))
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    if result["requests"] > count:
        result["replayed"] = result["requests"] - count
    return result


async def _aiohttp_load(base_url: str, seconds: float, tag: str) -> dict[str, Any]:
    import aiohttp

    url = base_url + "/api/generate"
    headers = {"Content-Type": "text/plain;charset=UTF-8"}
    done = status_errors = socket_errors = 0
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def one_connection(session: aiohttp.ClientSession, lane: int) -> None:
        nonlocal done, status_errors, socket_errors
        index = 0
        while time.perf_counter() < deadline:
            index += 1
            sent = time.perf_counter()
            try:
                async with session.post(
                    url, data=signed_body(f"ping {tag}-{lane}-{index}"), headers=headers
                ) as r:
                    await r.read()
                    status_errors += r.status >= 400
                latencies.append(time.perf_counter() - sent)
            except aiohttp.ClientError:
                socket_errors += 1
            done += 1

    started = time.perf_counter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        await asyncio.gather(*(one_connection(session, lane) for lane in range(CONNECTIONS)))
    elapsed = time.perf_counter() - started
    return {
        "requests": done,
        "rps": done / elapsed,
        "status_errors": status_errors,
        "socket_errors": socket_errors,
        "p99_us": percentile(latencies, 99) * 1e6 if latencies else float("nan"),
    }


def _aiohttp(base_url: str, seconds: float, tag: str) -> dict[str, Any]:
    out = subprocess.run(
        python_cmd("benchmarks.b3_server", base_url, str(seconds), tag),
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=seconds + 60,
    )
    if out.returncode != 0:
        raise RuntimeError(f"B3 aiohttp load generator failed:\n{out.stderr}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def run(quick: bool, server_config: dict[str, Any]) -> list[Row]:
    rounds, seconds = (3, 2.0) if quick else (7, 4.0)
    use_wrk = shutil.which("wrk") is not None
    sample = PREFIX + "ping r0-000000"
    results: dict[str, list[dict[str, Any]]] = {"ours": [], "bare": [], "one": []}
    # "one": the same guarded server with an echo backend that answers in one chunk.
    # Not a target: it shows how much of the gap is the guard and how much is the
    # one socket write per chunk that streaming costs (the bare route writes once).
    with (
        ServerProcess("gprochat", config=server_config) as ours,
        ServerProcess("bare", body=sample) as bare,
        ServerProcess("gprochat", config=server_config, echo={"words_per_chunk": 10_000}) as one,
    ):
        servers = {"ours": ours, "bare": bare, "one": one}
        for index in range(rounds):
            order = ("ours", "bare", "one") if index % 2 == 0 else ("one", "bare", "ours")
            for kind in order:
                tag = f"r{index}{kind[0]}"
                cpu_before = _cpu_seconds(servers[kind].pid)
                if use_wrk:
                    result = _wrk(servers[kind].base_url, seconds, tag, count=int(seconds * 12000))
                else:
                    result = _aiohttp(servers[kind].base_url, seconds, tag)
                result["cpu_us"] = (_cpu_seconds(servers[kind].pid) - cpu_before) / max(
                    1, result["requests"]) * 1e6
                results[kind].append(result)
    rps = {k: [r["rps"] for r in rs] for k, rs in results.items()}
    errors = {
        k: sum(r["status_errors"] + r["socket_errors"] for r in rs) for k, rs in results.items()
    }
    replayed = sum(r.get("replayed", 0) for r in results["ours"] + results["one"])

    def median(values: list[float]) -> float:
        return sorted(values)[len(values) // 2]

    generator = f"wrk -t1 -c{CONNECTIONS}" if use_wrk else f"aiohttp, {CONNECTIONS} connections"
    note = (
        f"{rounds} pairs x {seconds:.0f} s, {generator}; non-2xx/socket errors: "
        f"ours {errors['ours']}, bare {errors['bare']}"
        + (f"; {replayed} requests reused a body (replays)" if replayed else "")
    )
    p99s = {k: [r["p99_us"] / 1000 for r in rs] for k, rs in results.items()}
    p99 = {k: median(values) for k, values in p99s.items()}
    note += f"; p99 latency ours {p99['ours']:.1f} ms, bare {p99['bare']:.1f} ms"
    tail_note = f"each pair's p99 under the same load ({generator}), opening its connections included"
    if use_wrk:
        p50 = {k: median([r["p50_us"] / 1000 for r in rs]) for k, rs in results.items()}
        tail_note += f"; p50 ours {p50['ours']:.1f} ms, bare {p50['bare']:.1f} ms"
    cpu = {k: [r["cpu_us"] for r in rs] for k, rs in results.items()}
    return [
        Row(
            "B3",
            "server req/s, guarded vs bare",
            median(rps["ours"]),
            median(rps["bare"]),
            "req/s",
            paired_ratio(rps["ours"], rps["bare"]),
            0.6,
            "higher",
            ">= 0.6x",
            note=note,
        ),
        Row(
            "B3",
            "p99 latency, guarded / bare",
            p99["ours"],
            p99["bare"],
            "ms",
            paired_ratio(p99s["ours"], p99s["bare"]),
            3.0,
            "lower",
            "<= 3x",
            note=tail_note,
        ),
        Row(
            "B3",
            "diagnostic: guarded, one-chunk answer vs bare",
            median(rps["one"]),
            median(rps["bare"]),
            "req/s",
            paired_ratio(rps["one"], rps["bare"]),
            note="the echo backend answers in one chunk instead of six: the rest of the "
            "gap to bare is the guard, routing and metrics",
        ),
        Row(
            "B3",
            "diagnostic: server CPU per request, bare / guarded",
            median(cpu["ours"]),
            median(cpu["bare"]),
            "us",
            paired_ratio(cpu["bare"], cpu["ours"]),
            note="each server process's CPU time over its rounds, per request answered: "
            "steadier than req/s when other work shares the machine; the ratio reads "
            "like req/s's (higher is better)",
        ),
    ]


def _cpu_seconds(pid: int) -> float:
    import psutil

    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


if __name__ == "__main__":
    print(json.dumps(asyncio.run(_aiohttp_load(sys.argv[1], float(sys.argv[2]), sys.argv[3]))))
