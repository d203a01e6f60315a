"""B2, client, long stream: one 50 MB streamed answer decoded to text.

ours  = ``GPROChat.create_async_generator``, chunks counted and dropped,
floor = raw aiohttp ``iter_any()`` plus an incremental UTF-8 decoder.

The source is ``benchmarks.servers bytes``, a raw asyncio server writing pre-built
chunked frames of multi-byte text (64 KiB each, so boundaries split characters): it
is never the bottleneck. Each side runs in a fresh process per round, so its peak RSS
(``ru_maxrss``) is its own; rounds alternate which side goes first.
"""

from __future__ import annotations

import asyncio
import codecs
import json
import resource
import subprocess
import sys
import time
from typing import Any

from ._proc import ServerProcess, child_env
from ._report import Row, paired_ratio

__all__ = ["run", "SIZE"]

SIZE = 50 * 1024 * 1024


def _rss_kib() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() // 1024


async def _ours(base_url: str) -> int:
    from gprochat.providers import GPROChat

    chars = 0
    async for text in GPROChat.create_async_generator(
        "", [{"role": "user", "content": "stream please"}], base_url=base_url
    ):
        chars += len(text)
    return chars


async def _floor(base_url: str) -> int:
    import aiohttp

    chars = 0
    async with aiohttp.ClientSession() as session:
        async with session.post(base_url + "/api/generate", data=b"{}") as response:
            response.raise_for_status()
            decoder = codecs.getincrementaldecoder("utf-8")()
            async for chunk in response.content.iter_any():
                chars += len(decoder.decode(chunk))
            chars += len(decoder.decode(b"", final=True))
    return chars


def client(kind: str, base_url: str) -> None:
    """Import everything first (that is baseline memory too), then time one stream."""
    import aiohttp  # noqa: F401

    if kind == "ours":
        import gprochat.providers  # noqa: F401
    rss_start = _rss_kib()
    started = time.perf_counter()
    chars = asyncio.run(_ours(base_url) if kind == "ours" else _floor(base_url))
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps({"chars": chars, "seconds": seconds, "peak_kib": peak, "start_kib": rss_start})
    )


def _one(kind: str, base_url: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.b2_stream", kind, base_url],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=300,
    )
    if out.returncode != 0:
        raise RuntimeError(f"B2 {kind} client failed:\n{out.stderr}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def run(quick: bool) -> list[Row]:
    rounds = 3 if quick else 7
    results: dict[str, list[dict[str, Any]]] = {"ours": [], "floor": []}
    with ServerProcess("bytes", size=SIZE, chunk=65536) as server:
        for index in range(rounds):
            for kind in ("ours", "floor") if index % 2 == 0 else ("floor", "ours"):
                results[kind].append(_one(kind, server.base_url))
    chars = {r["chars"] for rs in results.values() for r in rs}
    mb_s = {k: [SIZE / r["seconds"] / 1e6 for r in rs] for k, rs in results.items()}
    peak = {k: [r["peak_kib"] / 1024 for r in rs] for k, rs in results.items()}
    growth = {k: [(r["peak_kib"] - r["start_kib"]) / 1024 for r in rs] for k, rs in results.items()}
    extra = [a - b for a, b in zip(peak["ours"], peak["floor"], strict=False)]

    def median(values: list[float]) -> float:
        return sorted(values)[len(values) // 2]

    note = (
        f"{rounds} pairs; chars decoded per run: {sorted(chars)}; peak growth during the "
        f"stream: ours {median(growth['ours']):.1f} MiB, floor {median(growth['floor']):.1f} MiB"
    )
    return [
        Row(
            "B2",
            "throughput, 50 MB stream",
            median(mb_s["ours"]),
            median(mb_s["floor"]),
            "MB/s",
            paired_ratio(mb_s["ours"], mb_s["floor"]),
            0.8,
            "higher",
            ">= 0.8x",
            note=note,
        ),
        Row(
            "B2",
            "peak RSS (process)",
            median(peak["ours"]),
            median(peak["floor"]),
            "MiB",
            paired_ratio(peak["ours"], peak["floor"]),
            16.0,
            "lower",
            "<= floor + 16 MiB",
            value=median(extra),
            note=f"ours - floor per pair: median {median(extra):+.1f} MiB "
            f"(min {min(extra):+.1f}, max {max(extra):+.1f})",
        ),
    ]


if __name__ == "__main__":
    client(sys.argv[1], sys.argv[2])
