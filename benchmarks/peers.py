"""Locate (or install) the peers we compare with: g4f 0.4.0.0's original GPROChat provider.

g4f is imported only in its own worker process. It is looked up, in order, in
``$GPROCHAT_BENCH_G4F_PYTHON`` (an interpreter that has it), this interpreter, and the
harness's own venv ``.bench-peers/g4f`` (created by ``python -m benchmarks --install-peers``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

__all__ = ["G4F_REQUIREMENT", "locate_g4f", "install_g4f", "PEER_VENV"]

G4F_REQUIREMENT = "g4f==0.4.0.0"
PEER_VENV = Path(__file__).resolve().parent.parent / ".bench-peers" / "g4f"
_PROBE = "import g4f.version, importlib.metadata as m; print(m.version('g4f'))"


def _g4f_version(python: str) -> Optional[str]:
    try:
        out = subprocess.run(
            [python, "-W", "ignore", "-c", _PROBE], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def locate_g4f() -> tuple[Optional[str], str]:
    """``(python, description)``: an interpreter that imports g4f, or ``None`` and why not."""
    candidates = [os.environ.get("GPROCHAT_BENCH_G4F_PYTHON"), sys.executable]
    candidates.append(str(PEER_VENV / "bin" / "python"))
    for python in candidates:
        if python and Path(python).exists():
            version = _g4f_version(python)
            if version:
                note = "" if version == "0.4.0.0" else " (WARNING: wanted 0.4.0.0)"
                where = ("the benchmark's own interpreter" if python == sys.executable
                         else "GPROCHAT_BENCH_G4F_PYTHON" if python == candidates[0]
                         else "its own virtualenv (.bench-peers/g4f)")
                # Which interpreter, not its path: reports are committed.
                return python, f"g4f {version} in {where}{note}"
    return None, (
        f"g4f is missing: `pip install -e '.[bench]'` (which pins {G4F_REQUIREMENT}) or "
        "`python -m benchmarks --install-peers` to put it in its own venv; "
        "B1's g4f column is skipped"
    )


def install_g4f() -> str:
    """Create ``.bench-peers/g4f`` with g4f 0.4.0.0 (and its small core deps)."""
    if not (PEER_VENV / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
    subprocess.run(
        [str(PEER_VENV / "bin" / "python"), "-m", "pip", "install", "-q", G4F_REQUIREMENT],
        check=True,
    )
    return str(PEER_VENV / "bin" / "python")
