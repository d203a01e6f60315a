"""``python -m benchmarks [--quick] [--only B1,B3] [--json out.json] [--chart docs/b4.png]``."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from typing import Any

from . import (
    b1_short,
    b2_stream,
    b3_server,
    b4_streams,
    b5_gateway,
    b6_local,
    b7_router,
    b8_images,
    b9_page,
    peers,
)
from ._proc import raise_nofile_limit
from ._report import Row, format_table, machine_description

ALL = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B9")


def server_config() -> dict[str, Any]:
    """Our server's settings for the benchmarks: defaults, the guard on.

    The guard's rate limits are raised far above what a load generator on one
    loopback address can reach: every request is still checked (that cost is what
    B3 measures), none is refused. Keys this ServerConfig lacks are dropped, with a
    note, by ``benchmarks.servers``.
    """
    return {
        "rate_limit": "1000000/second",  # checked on every request, never reached
        "max_streams": 4096,  # B4 holds 1,000 answers open at once
        "api_keys": ["bench-key"],  # the gateway checks a key, as deployed
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds (< 2 min)")
    parser.add_argument("--only", default=",".join(ALL), help="comma-separated subset, e.g. B1,B3")
    parser.add_argument("--json", help="also write every number to this JSON file")
    parser.add_argument("--chart", help="write B4's chart (PNG) here, e.g. docs/b4.png")
    parser.add_argument(
        "--install-peers",
        action="store_true",
        help=f"put {peers.G4F_REQUIREMENT} in its own venv (.bench-peers/g4f) and build llama.cpp's "
        "llama-server from llama-cpp-python's sdist (~10 min on 2 cores) first",
    )
    args = parser.parse_args(argv)
    chosen = [name.strip().upper() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(ALL))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}: choose from {', '.join(ALL)}")
    raise_nofile_limit()

    if args.install_peers:
        print(f"installing {peers.G4F_REQUIREMENT} into {peers.PEER_VENV} ...", file=sys.stderr)
        peers.install_g4f()
        if "B6" in chosen:
            print("building llama-server from llama-cpp-python's sdist (about ten minutes) ...",
                  file=sys.stderr)
            try:
                print(f"llama-server: {peers.install_llama_server()}", file=sys.stderr)
            except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
                print(f"WARNING: llama-server could not be built ({exc}); B6's llama-server rows "
                      "are skipped", file=sys.stderr)
        if "B7" in chosen:
            print(f"installing {b7_router.LITELLM_REQUIREMENT} into {b7_router.LITELLM_VENV} ...",
                  file=sys.stderr)
            b7_router.install_litellm()
    g4f_python, g4f_note = peers.locate_g4f()
    machine = machine_description()
    machine["g4f peer"] = g4f_note
    print("machine:")
    for key, value in machine.items():
        print(f"  {key}: {value}")
    if g4f_python is None:
        print(f"\nWARNING: {g4f_note}\n", file=sys.stderr)

    config = server_config()
    rows: list[Row] = []
    extra: dict[str, Any] = {}
    started = time.perf_counter()
    for name in chosen:
        print(f"\n== {name} ...", flush=True)
        bench_started = time.perf_counter()
        if name == "B1":
            rows += b1_short.run(args.quick, g4f_python, config)
        elif name == "B2":
            rows += b2_stream.run(args.quick)
        elif name == "B3":
            rows += b3_server.run(args.quick, config)
        elif name == "B4":
            b4_rows, b4_data = b4_streams.run(args.quick, config)
            rows += b4_rows
            extra["b4"] = b4_data
            if args.chart:
                from .chart import plot_b4

                plot_b4(b4_data, args.chart)
                print(f"   chart written to {args.chart}")
        elif name == "B5":
            rows += b5_gateway.run(args.quick, config)
        elif name == "B6":
            rows += b6_local.run(args.quick)
        elif name == "B7":
            rows += b7_router.run(args.quick)
        elif name == "B8":
            rows += b8_images.run(args.quick)
        elif name == "B9":
            rows += b9_page.run(args.quick)
        print(f"   done in {time.perf_counter() - bench_started:.0f} s", flush=True)

    print(f"\n{'quick' if args.quick else 'full'} run, {time.perf_counter() - started:.0f} s\n")
    print(format_table(rows))
    notes = [f"- {row.bench} {row.metric}: {row.note}" for row in rows if row.note]
    if notes:
        print("\nnotes:\n" + "\n".join(notes))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(
                {
                    "machine": machine,
                    "quick": args.quick,
                    "rows": [row.as_dict() for row in rows],
                    **extra,
                },
                handle,
                indent=1,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
