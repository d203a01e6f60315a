"""Server processes keep their start-up objects out of the garbage collector's scans."""

import subprocess
import sys

from ..processes import clean_env

WORKER = """
import gc
from gprochat.server.runner import app_from_environment
before = gc.get_freeze_count()
app_from_environment()
print(before, gc.get_freeze_count())
"""


def test_a_worker_process_freezes_what_it_loaded() -> None:
    result = subprocess.run(
        [sys.executable, "-c", WORKER], env=clean_env(), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    before, after = map(int, result.stdout.split())
    # Modules, the app and its schemas: tens of thousands of objects, never scanned again.
    assert before == 0 and after > 10_000
