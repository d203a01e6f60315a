"""deploy/gprochat.service: ``systemd-analyze verify`` (no systemd as PID 1 needed), its sandbox.

CI has no systemd to run the unit under; what its sandbox would break is tried apart.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from ..processes import clean_env, free_port, stop_process
from ..server.backends.test_local import require_local_model
from ..server.helpers import signed
from .conftest import UNIT, UNIT_BINARY, render, require, unit_serve_flags


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


# PR_SET_MDWE with PR_MDWE_REFUSE_EXEC_GAIN (Linux 6.3+): the kernel's own form of
# MemoryDenyWriteExecute=yes (no memory both writable and executable, no memory made
# executable later), applied to the process before gprochat starts in it.
_WITHOUT_WRITABLE_CODE = """
import ctypes, runpy, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:
    sys.exit(77)
sys.argv = ["gprochat", *sys.argv[1:]]
runpy.run_module("gprochat.cli", run_name="__main__")
"""


def test_the_server_and_its_local_model_run_as_memory_deny_write_execute_requires(tmp_path: Path) -> None:
    assert "MemoryDenyWriteExecute=yes" in UNIT.read_text()
    require_local_model()
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-c", _WITHOUT_WRITABLE_CODE, "serve", *unit_serve_flags(),
             "--host", "127.0.0.1", "--port", str(port), "--backend", "local"],
            env=clean_env(GPROCHAT_BACKEND="local"), stdout=output, stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if process.poll() == 77:
                pytest.skip("this kernel has no PR_SET_MDWE (Linux 6.3 and later)")
            assert process.poll() is None, log.read_text()
            try:
                with urllib.request.urlopen(base_url + "/healthz", timeout=5) as response:
                    health = json.load(response)
                if health["status"] == "ok":
                    break
            except OSError:
                pass  # not listening yet, or 503 while the model loads
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        body = json.dumps(signed("Name the capital of France.")).encode()
        request = urllib.request.Request(base_url + "/api/generate", data=body,
                                         headers={"Content-Type": "text/plain;charset=UTF-8"})
        with urllib.request.urlopen(request, timeout=120) as response:
            answer = response.read().decode()
    finally:
        stop_process(process)
    assert health["backend"] == "local"
    assert "Paris" in answer
