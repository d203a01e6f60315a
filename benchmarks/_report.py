"""Results: paired ratios, targets, the table, and the machine they were measured on."""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from typing import Any, Optional

__all__ = ["Row", "paired_ratio", "format_table", "machine_description", "percentile"]


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100), nearest-rank, of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


@dataclass
class Row:
    """One line of the table: ours vs a baseline on one metric, and its target.

    ``ratios`` are per-round ratios (ours / baseline) from interleaved pairs; the
    table shows their median and min-max. ``better`` says which way is good.
    ``target`` is the bound on the median ratio (or on ``value`` when the row
    compares against an absolute bound, as B2's memory and B4's errors do).
    """

    bench: str
    metric: str
    ours: float
    baseline: float
    unit: str
    ratios: list[float] = field(default_factory=list)
    target: Optional[float] = None
    better: str = "higher"  # "higher": ratio >= target is met; "lower": ratio <= target
    target_text: str = ""
    value: Optional[float] = None  # when the target is on an absolute value, not the ratio
    note: str = ""

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios) if self.ratios else float("nan")

    @property
    def met(self) -> Optional[bool]:
        if self.target is None:
            return None
        measured = self.value if self.value is not None else self.ratio
        return measured >= self.target if self.better == "higher" else measured <= self.target

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(ratio=self.ratio, met=self.met)
        return data


def paired_ratio(ours: Sequence[float], baseline: Sequence[float]) -> list[float]:
    """Round-by-round ``ours[i] / baseline[i]``."""
    return [a / b for a, b in zip(ours, baseline, strict=False) if b]


def _num(value: float) -> str:
    if value != value:  # nan
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def format_table(rows: Sequence[Row]) -> str:
    """A Markdown table: medians, ratio median (min-max), target, verdict."""
    lines = [
        "| bench | metric | ours | baseline | ratio (min-max) | target | met |",
        "|---|---|---:|---:|---|---|---|",
    ]
    for row in rows:
        spread = (
            f"{row.ratio:.2f}x ({min(row.ratios):.2f}-{max(row.ratios):.2f})" if row.ratios else "-"
        )
        verdict = {None: "-", True: "yes", False: "**no**"}[row.met]
        lines.append(
            f"| {row.bench} | {row.metric} | {_num(row.ours)} {row.unit} | "
            f"{_num(row.baseline)} {row.unit} | {spread} | {row.target_text or '-'} | {verdict} |"
        )
    return "\n".join(lines)


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine_description() -> dict[str, str]:
    """What the numbers were measured on."""
    try:
        import psutil

        memory = f"{psutil.virtual_memory().total / 2**30:.1f} GiB"
    except ImportError:
        memory = "unknown"
    wrk = shutil.which("wrk")
    return {
        "cpu": f"{_cpu_model()}, {os.cpu_count()} logical CPUs",
        "memory": memory,
        "os": f"{platform.system()} {platform.release()} ({platform.machine()})",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "packages": ", ".join(
            f"{name} {_version(name)}"
            for name in (
                "gprochat",
                "aiohttp",
                "uvicorn",
                "fastapi",
                "h11",
                "httptools",
                "uvloop",
                "g4f",
            )
        ),
        "load generator": "wrk (" + wrk + ")" if wrk else "aiohttp (wrk not found)",
        "commit": _git_commit(),
    }
