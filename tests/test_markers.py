"""tests/conftest.py marks each test from what it uses: browser, model, redis, slow."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def collected(marker_expression: str, *paths: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         "-m", marker_expression, *paths],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode in (0, 5), result.stdout + result.stderr  # 5: none selected
    return [line for line in result.stdout.splitlines() if "::" in line]


def test_the_markers_follow_fixtures_processes_and_the_model() -> None:
    # redis: the redis_server fixture, also when asked for by name for one parameter.
    redis = collected("redis", "tests/server/test_guard_limits.py", "tests/server/test_scale_out.py")
    assert any("test_scale_out.py::" in test for test in redis)
    assert any(test.endswith("[redis]") for test in redis)
    assert not any(test.endswith("[memory]") for test in redis)
    # browser: the Playwright fixture, and nothing else.
    browser = collected("browser", "tests/server/web/test_browser.py", "tests/server/test_guard.py")
    assert browser and all(test.startswith("tests/server/web/") for test in browser)
    # model: a test that loads the GGUF (through the module's helpers), not its neighbours.
    model = collected("model", "tests/server/backends/test_batch.py")
    assert any("cancelled_frees_its_place" in test for test in model)
    assert not any("stop_strings" in test for test in model)
    # slow: a test that starts `gprochat serve` is out of the inner loop; an in-process one is in.
    fast = collected("not slow", "tests/server/test_shutdown_and_logs.py", "tests/server/test_guard.py")
    assert fast and not any("test_shutdown_and_logs.py" in test for test in fast)
    # ...also when the test imports the process helper in its own body.
    slow = collected("slow", "tests/server/test_gateway_images.py")
    assert any(test.endswith("::test_gprochat_serve_fetch_image_urls_is_wired") for test in slow)
