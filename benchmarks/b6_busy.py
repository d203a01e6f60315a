"""B6 on a busy machine: the local model's speed beside one CPU-bound process per core.

``python -m benchmarks.b6_busy [--rounds 3] [--tokens 48] [--config NAME ...]``

Each configuration runs in its own process (llama.cpp reads some settings from the
environment when it loads), loads the default model with ``LocalBackend`` and answers
the same prompts one at a time (greedy, ``--tokens`` tokens each) and then four at
once. Every configuration is measured twice: on the machine as it is ("idle": nothing
added) and with one ``python -c 'while True: pass'`` per core beside it ("busy"; each
loop ends by itself after the measurement's time budget, even if this script dies).
Configurations and loads are interleaved round by round; medians are printed, with
each configuration's ratio to ``--threads 1`` under the same load. On a machine shared
with other work, ``--nice -19`` (as root) runs the measured process and the busy loops
ahead of everything else, so "idle" and "one busy process per core" mean what they say.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

PROMPTS = [
    "Write a long story about a dragon who learns to cook.",
    "Explain how a bicycle works, in detail.",
    "Describe a walk through a forest in autumn.",
]

# name -> (threads, extra environment)
CONFIGS: dict[str, tuple[int, dict[str, str]]] = {
    "default": (0, {}),  # LocalBackend's own choices (0: threads not given)
    "threads=1": (1, {}),
    # Two threads, waiting at llama.cpp's barriers as libgomp does by default: spinning
    # 300,000 rounds before sleeping (what the local backend did before).
    # Two threads all the time, as before the engine's ThreadTuner.
    "2,fixed": (2, {"B6_BUSY_FIXED": "1"}),
    # libgomp's barrier wait: spin that many rounds before sleeping (its default is 300,000).
    "2,fixed,spin=30k": (2, {"B6_BUSY_FIXED": "1", "GOMP_SPINCOUNT": "30000"}),
    "2,fixed,spin=3k": (2, {"B6_BUSY_FIXED": "1", "GOMP_SPINCOUNT": "3000"}),
    "2,fixed,passive": (2, {"B6_BUSY_FIXED": "1", "OMP_WAIT_POLICY": "PASSIVE"}),
}


def _child(threads: int, tokens: int, budget: float) -> dict[str, Any]:
    """Runs in the measured process: load, answer, report tokens/s."""
    from gprochat.server.backends import LocalBackend
    from gprochat.server.backends._batch import ThreadTuner
    from gprochat.server.backends.base import AnswerReport, Conversation

    if os.environ.get("B6_BUSY_FIXED"):
        ThreadTuner.AUTO = False  # never probes: the threads stay as given

    backend = LocalBackend(parallel=4, n_ctx=2048, max_tokens=tokens, threads=threads or None)
    started = time.perf_counter()
    assert backend.wait_ready(600) == "ready", backend.status
    load = time.perf_counter() - started

    async def answer(prompt: str) -> int:
        report = AnswerReport()
        async for _ in backend.stream(Conversation(message=prompt, report=report)):
            pass
        return int((report.usage or {}).get("completion_tokens", 0))

    async def main() -> dict[str, Any]:
        single = []
        deadline = time.perf_counter() + budget
        for prompt in PROMPTS:
            begun = time.perf_counter()
            count = await answer(prompt)
            single.append(count / (time.perf_counter() - begun))
            if time.perf_counter() > deadline:
                break
        together = float("nan")  # not measured when the single answers took the budget
        if time.perf_counter() < deadline:
            begun = time.perf_counter()
            counts = await asyncio.gather(*(answer(p) for p in [*PROMPTS, PROMPTS[0]][:4]))
            together = sum(counts) / (time.perf_counter() - begun)
        await backend.aclose()
        return {"load": load, "single": statistics.median(single), "four": together,
                "threads": backend.threads}

    return asyncio.run(main())


def _niced(niceness: int) -> Any:
    """A new session (its own scheduling group where Linux groups by session), at ``niceness``."""

    def start() -> None:
        os.setsid()
        if niceness:
            try:
                with open("/proc/self/autogroup", "w") as group:
                    group.write(str(niceness))
            except OSError:
                pass
            os.nice(niceness)

    return start


def _measure(name: str, tokens: int, budget: float, niceness: int) -> dict[str, Any]:
    threads, extra = CONFIGS[name]
    env = {**os.environ, **extra}
    result = subprocess.run([sys.executable, "-m", "benchmarks.b6_busy", "--child", str(threads),
                             "--tokens", str(tokens), "--budget", str(budget)],
                            env=env, capture_output=True, text=True, timeout=budget * 20 + 300,
                            preexec_fn=_niced(niceness))
    if result.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{result.stderr[-2000:]}")
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def _busy_loops(seconds: float, niceness: int) -> list[subprocess.Popen[bytes]]:
    loop = f"import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end: pass\n"
    return [subprocess.Popen([sys.executable, "-c", loop], preexec_fn=_niced(niceness))
            for _ in range(os.cpu_count() or 1)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.b6_busy", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--budget", type=float, default=60.0, help="seconds of single answers per run")
    parser.add_argument("--config", action="append", choices=sorted(CONFIGS))
    parser.add_argument("--nice", type=int, default=0,
                        help="niceness of the measured process and of the busy loops: on a machine "
                             "shared with other work, -19 (root) makes it as good as idle for them")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(_child(args.child, args.tokens, args.budget)))
        return 0
    names = args.config or list(CONFIGS)
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for index in range(args.rounds):
        for load in ("idle", "busy") if index % 2 == 0 else ("busy", "idle"):
            for name in names if index % 2 == 0 else names[::-1]:
                loops = _busy_loops(args.budget * 4 + 120, args.nice) if load == "busy" else []
                try:
                    result = _measure(name, args.tokens, args.budget, args.nice)
                finally:
                    for process in loops:
                        process.kill()
                        process.wait()
                results.setdefault((load, name), []).append(result)
                print(f"round {index + 1} {load:4} {name:10} single {result['single']:6.1f} tok/s, "
                      f"four at once {result['four']:6.1f} tok/s, {result['threads']} thread(s)",
                      flush=True)
    print(f"\nmedians of {args.rounds} round(s), {args.tokens}-token answers, {os.cpu_count()} CPUs")
    for load in ("idle", "busy"):
        base = results.get((load, "threads=1"))
        for name in names:
            runs = results[load, name]
            single = statistics.median(r["single"] for r in runs)
            four = statistics.median(r["four"] for r in runs)  # nan when any run skipped it
            ratio = ""
            if base:
                ratio = (f"  ({single / statistics.median(r['single'] for r in base):.2f}x, "
                         f"{four / statistics.median(r['four'] for r in base):.2f}x threads=1)")
            print(f"{load:4} {name:10} one answer {single:6.1f} tok/s, four at once {four:6.1f} tok/s{ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
