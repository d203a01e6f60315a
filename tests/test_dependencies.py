"""pyproject.toml's lower bounds are the versions .ci/run's second pass tests (.ci/lowest.txt)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parent.parent


def _requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["local"]]


def _lowest_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / ".ci" / "lowest.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    return pins


def test_every_runtime_dependency_has_a_lower_bound_pinned_for_the_lowest_run() -> None:
    pins = _lowest_pins()
    for requirement in _requirements():
        lower = [s.version for s in requirement.specifier if s.operator == ">="]
        assert len(lower) == 1, f"{requirement}: give it one tested lower bound (>=)"
        pinned = pins.get(canonicalize_name(requirement.name))
        assert pinned is not None, f"{requirement.name}: pin its lower bound in .ci/lowest.txt"
        # 3.10 and 3.10.0 are the same version; the pin spells it out.
        assert re.sub(r"(\.0)+$", "", pinned) == re.sub(r"(\.0)+$", "", lower[0]), requirement
        assert pinned in requirement.specifier, requirement
    assert set(pins) == {canonicalize_name(r.name) for r in _requirements()}


def test_what_we_use_the_internals_of_is_bounded_above() -> None:
    bounded = {
        canonicalize_name(r.name) for r in _requirements() if any(s.operator == "<" for s in r.specifier)
    }
    # server/http.py subclasses uvicorn's httptools protocol; the engine calls llama.cpp's C API.
    assert {"uvicorn", "httptools", "llama-cpp-python"} <= bounded
