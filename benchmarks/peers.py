"""Locate (or install) the peers we compare with: g4f 0.4.0.0's original GPROChat
provider (B1) and llama.cpp's own C++ server, ``llama-server`` (B6).

g4f is imported only in its own worker process. It is looked up, in order, in
``$GPROCHAT_BENCH_G4F_PYTHON`` (an interpreter that has it), this interpreter, and the
harness's own venv ``.bench-peers/g4f`` (created by ``python -m benchmarks --install-peers``).

``llama-server`` is built by ``--install-peers`` from the llama.cpp sources vendored in
the sdist of the installed llama-cpp-python (so it runs the same llama.cpp as our
backend), into ``~/.cache/gprochat-bench/llama.cpp-VERSION`` (``$GPROCHAT_BENCH_CACHE``
moves it); it is looked up in ``$GPROCHAT_BENCH_LLAMA_SERVER``, then there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Optional

__all__ = ["G4F_REQUIREMENT", "locate_g4f", "install_g4f", "PEER_VENV", "locate_llama_server",
           "install_llama_server"]

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


def _binding_version() -> Optional[str]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("llama-cpp-python")
    except PackageNotFoundError:
        return None


def _cache() -> Path:
    return Path(os.environ.get("GPROCHAT_BENCH_CACHE") or Path.home() / ".cache" / "gprochat-bench")


def _llama_server_path(version: str) -> Path:
    return _cache() / f"llama.cpp-{version}" / "build" / "bin" / "llama-server"


def locate_llama_server() -> tuple[Optional[str], str]:
    """``(path, description)``: a ``llama-server`` built from the installed binding's
    llama.cpp, or ``None`` and why not."""
    given = os.environ.get("GPROCHAT_BENCH_LLAMA_SERVER")
    if given:
        if Path(given).is_file():
            return given, "llama-server from GPROCHAT_BENCH_LLAMA_SERVER"
        return None, f"GPROCHAT_BENCH_LLAMA_SERVER={given!r} is not a file"
    version = _binding_version()
    if version is None:
        return None, "llama-cpp-python is not installed, so there is no llama.cpp version to build"
    path = _llama_server_path(version)
    if path.is_file():
        return str(path), f"llama-server built from llama-cpp-python {version}'s llama.cpp"
    return None, (f"llama-server is not built: `python -m benchmarks --install-peers` builds it "
                  f"from llama-cpp-python {version}'s sdist (about ten minutes on two cores); "
                  "B6's llama-server rows are skipped")


def install_llama_server() -> str:
    """Build ``llama-server`` from the llama.cpp in the installed binding's sdist."""
    version = _binding_version()
    if version is None:
        raise RuntimeError("llama-cpp-python is not installed: pip install -e '.[local]' first")
    path = _llama_server_path(version)
    if path.is_file():
        return str(path)
    root = path.parent.parent.parent
    source = root / "src"
    if not (source / "CMakeLists.txt").is_file():
        download = root / "sdist"
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                        f"llama-cpp-python=={version}", "-d", str(download)], check=True)
        [archive] = download.glob("llama_cpp_python-*.tar.gz")
        prefix = f"{archive.name.removesuffix('.tar.gz')}/vendor/llama.cpp/"
        with tarfile.open(archive) as tar:
            members = []
            for member in tar.getmembers():
                if member.name.startswith(prefix) and len(member.name) > len(prefix):
                    member.name = member.name[len(prefix):]
                    members.append(member)
            tar.extractall(source, members=members, filter="data")
        shutil.rmtree(download)
    build = root / "build"
    # The server alone, without its web UI (no network for its assets) or HTTPS.
    subprocess.run(["cmake", "-S", str(source), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
                    "-DLLAMA_BUILD_SERVER=ON", "-DLLAMA_BUILD_TOOLS=ON", "-DLLAMA_BUILD_TESTS=OFF",
                    "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_UI=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF",
                    "-DLLAMA_OPENSSL=OFF", "-DBUILD_SHARED_LIBS=OFF"], check=True)
    # At the lowest priority: the build takes every core for minutes, and a shared
    # machine's other work should not wait for it (an interrupted build resumes).
    nice = ["nice", "-n", "19"] if shutil.which("nice") else []
    subprocess.run([*nice, "cmake", "--build", str(build), "--target", "llama-server", "-j",
                    str(os.cpu_count() or 1)], check=True)
    return str(path)
