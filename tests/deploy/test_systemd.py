"""deploy/gprochat.service passes ``systemd-analyze verify`` (no systemd as PID 1 needed)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from .conftest import UNIT, UNIT_BINARY, render, require


def _installed_gprochat() -> str:
    beside_python = Path(sys.executable).parent / "gprochat"
    found = str(beside_python) if beside_python.exists() else shutil.which("gprochat")
    assert found, "the gprochat command is not installed (pip install -e .)"
    return found


def _verify(unit_text: str, folder: Path) -> subprocess.CompletedProcess[str]:
    analyze = require("systemd-analyze", "systemd")
    # verify needs the unit's real name and an ExecStart that exists: this machine's gprochat.
    path = folder / "gprochat.service"
    path.write_text(render(unit_text, {UNIT_BINARY: _installed_gprochat()}))
    return subprocess.run([analyze, "verify", str(path)], capture_output=True, text=True, timeout=60)


def test_the_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    result = _verify(UNIT.read_text(), tmp_path)
    # verify exits 0 even for a misspelt directive, which it only warns about: no output at all.
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_verify_would_catch_a_broken_sandbox_line(tmp_path: Path) -> None:
    broken = render(UNIT.read_text(), {"ProtectSystem=strict": "ProtectSystem=strictest\nProtectSystm=yes"})
    result = _verify(broken, tmp_path)
    assert "ProtectSystm" in result.stderr and "strictest" in result.stderr
