"""B4, server, many slow streams: 1,000 concurrent answers, each paced over ~10 s.

Our server (echo backend, one word per chunk, 0.5 s between chunks: 20 chunks, 9.5 s)
runs in its own process; a separate load process first measures the unloaded time to
first byte (sequential requests, each dropped after its first chunk), then opens the
streams at a steady rate over ``RAMP`` seconds, so that all of them are open at once
for several seconds, and reads every answer to its end. It samples the server's RSS
(psutil) and the number of open streams every 100 ms. Both processes raise
RLIMIT_NOFILE, since every stream is a socket on each side.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

from ._proc import ServerProcess, child_env, python_cmd, raise_nofile_limit
from ._report import Row, percentile

__all__ = ["run"]

SECRET = "2BC120D4-BB36-1B60-26DE-DB630472A3D8"
DELAY = 0.5
WORDS = "a b c d e f g h"  # + "stream N" = 10 words; the echo prefix has 10: 20 chunks


async def _load(base_url: str, server_pid: int, streams: int, ramp: float) -> dict[str, Any]:
    import aiohttp
    import psutil

    from .b3_server import signed_body

    server = psutil.Process(server_pid)
    url = base_url + "/api/generate"
    headers = {"Content-Type": "text/plain;charset=UTF-8"}
    timeout = aiohttp.ClientTimeout(total=120)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        unloaded = []
        for index in range(30):
            started = time.perf_counter()
            async with session.post(
                url, data=signed_body(f"probe {index} {WORDS}"), headers=headers
            ) as r:
                await r.content.readany()
                unloaded.append(time.perf_counter() - started)
                r.close()  # drop it: only the first byte matters here
        await asyncio.sleep(1.0)
        rss_before = server.memory_info().rss

        open_now = 0
        records: list[dict[str, Any]] = []
        samples: list[tuple[float, int, int]] = []
        t0 = time.perf_counter()

        async def one(index: int) -> None:
            nonlocal open_now
            message = f"stream {index} {WORDS}"
            record: dict[str, Any] = {"start": time.perf_counter() - t0, "open_at_start": open_now}
            records.append(record)
            open_now += 1
            started = time.perf_counter()
            try:
                async with session.post(url, data=signed_body(message), headers=headers) as r:
                    if r.status != 200:
                        record["error"] = f"HTTP {r.status}: {(await r.text())[:200]}"
                        return
                    parts = []
                    async for chunk in r.content.iter_any():
                        if not parts:
                            record["ttfb"] = time.perf_counter() - started
                        parts.append(chunk)
                    if not b"".join(parts).decode().endswith(message):
                        record["error"] = "answer incomplete or wrong"
                    record["duration"] = time.perf_counter() - started
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                record["error"] = repr(exc)
            finally:
                open_now -= 1

        async def sample() -> None:
            while True:
                samples.append((time.perf_counter() - t0, open_now, server.memory_info().rss))
                await asyncio.sleep(0.1)

        # The load generator holds ~100 objects per stream too; its own collector's
        # pauses would show up as server latency. The run is bounded, so it can
        # skip collection while it measures (re-enabled right after).
        gc.collect()
        gc.disable()
        sampler = asyncio.create_task(sample())
        tasks = []
        for index in range(streams):
            tasks.append(asyncio.create_task(one(index)))
            # Pace the arrivals against the clock, not by summing sleeps.
            await asyncio.sleep(max(0.0, t0 + (index + 1) * ramp / streams - time.perf_counter()))
        await asyncio.gather(*tasks)
        sampler.cancel()
        gc.enable()
    return {"unloaded": unloaded, "rss_before": rss_before, "records": records, "samples": samples}


def load_main() -> None:
    raise_nofile_limit()
    base_url, pid, streams, ramp, out = sys.argv[2:7]
    result = asyncio.run(_load(base_url, int(pid), int(streams), float(ramp)))
    with open(out, "w") as handle:
        json.dump(result, handle)


def run(
    quick: bool, server_config: dict[str, Any], streams: int = 1000, ramp: float = 4.0
) -> tuple[list[Row], dict[str, Any]]:
    """Returns the table rows and the raw data (for the chart)."""
    raise_nofile_limit()
    with ServerProcess(
        "gprochat", config=server_config, echo={"delay": DELAY, "words_per_chunk": 1}
    ) as server:
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
            out = handle.name
        try:
            subprocess.run(
                python_cmd(
                    "benchmarks.b4_streams",
                    "load",
                    server.base_url,
                    str(server.pid),
                    str(streams),
                    str(ramp),
                    out,
                ),
                check=True,
                env=child_env(),
                timeout=300,
            )
            with open(out) as handle:
                data: dict[str, Any] = json.load(handle)
        finally:
            os.unlink(out)
    records = data["records"]
    errors = [r["error"] for r in records if "error" in r]
    ttfb = [r["ttfb"] * 1000 for r in records if "ttfb" in r]
    unloaded_ms = sorted(data["unloaded"])[len(data["unloaded"]) // 2] * 1000
    p99 = percentile(ttfb, 99) if ttfb else float("nan")
    peak_open = max(open_ for _, open_, _ in data["samples"])
    peak_rss = max(rss for _, _, rss in data["samples"])
    per_stream_kib = (peak_rss - data["rss_before"]) / 1024 / max(1, peak_open)
    durations = [r["duration"] for r in records if "duration" in r]
    note = (
        f"{streams} streams opened over {ramp:.0f} s, {DELAY} s between chunks "
        f"(answers took {min(durations or [0]):.1f}-{max(durations or [0]):.1f} s); "
        f"peak {peak_open} open at once; server RSS {data['rss_before'] / 2**20:.0f} -> "
        f"{peak_rss / 2**20:.0f} MiB; unloaded TTFB median {unloaded_ms:.2f} ms, "
        f"loaded p50 {percentile(ttfb, 50) if ttfb else float('nan'):.2f} ms"
    )
    if errors:
        note += f"; first errors: {sorted(set(errors))[:3]}"
    data.update(
        unloaded_ms=unloaded_ms, p99_ms=p99, per_stream_kib=per_stream_kib, errors=len(errors)
    )
    rows = [
        Row(
            "B4",
            f"errors in {streams} streams",
            len(errors),
            0,
            "",
            [],
            0,
            "lower",
            "0",
            value=len(errors),
            note=note,
        ),
        Row(
            "B4",
            "p99 TTFB, loaded vs unloaded",
            p99,
            unloaded_ms,
            "ms",
            [p99 / unloaded_ms],
            10.0,
            "lower",
            "< 10x",
        ),
        Row(
            "B4",
            "server RSS per open stream",
            per_stream_kib,
            64,
            "KiB",
            [per_stream_kib / 64],
            64.0,
            "lower",
            "<= 64 KiB",
            value=per_stream_kib,
        ),
    ]
    return rows, data


if __name__ == "__main__" and sys.argv[1] == "load":
    load_main()
