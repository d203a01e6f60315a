"""B4's chart: streams open vs time to first byte and the server's RSS."""

from __future__ import annotations

from typing import Any

__all__ = ["plot_b4"]


def plot_b4(data: dict[str, Any], path: str) -> None:
    """Two panels sharing the x axis "streams open": TTFB scatter and server RSS."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [r for r in data["records"] if "ttfb" in r]
    samples = data["samples"]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    top.scatter(
        [r["open_at_start"] for r in records],
        [r["ttfb"] * 1000 for r in records],
        s=6,
        alpha=0.6,
        label="time to first byte of a new stream",
    )
    top.axhline(
        data["unloaded_ms"],
        color="green",
        linestyle="--",
        label=f"unloaded median {data['unloaded_ms']:.2f} ms",
    )
    top.axhline(data["unloaded_ms"] * 10, color="red", linestyle=":", label="target: 10x unloaded")
    top.axhline(
        data["p99_ms"], color="orange", linestyle="-.", label=f"loaded p99 {data['p99_ms']:.1f} ms"
    )
    top.set_yscale("log")
    top.set_ylabel("TTFB (ms, log)")
    top.legend(loc="upper left", fontsize=8)
    top.set_title(
        f"B4: {len(data['records'])} slow streams on one server process ({data['errors']} errors)"
    )

    ramp = [s for s in samples if s[0] <= max(r["start"] for r in data["records"]) + 0.2]
    bottom.plot(
        [s[1] for s in ramp],
        [s[2] / 2**20 for s in ramp],
        color="purple",
        label="server RSS while streams open",
    )
    bottom.axhline(data["rss_before"] / 2**20, color="gray", linestyle="--", label="RSS before")
    bottom.set_xlabel("streams open")
    bottom.set_ylabel("server RSS (MiB)")
    bottom.legend(loc="upper left", fontsize=8)
    bottom.text(
        0.98,
        0.05,
        f"{data['per_stream_kib']:.1f} KiB per open stream",
        transform=bottom.transAxes,
        ha="right",
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
