"""The synchronous path: plain scripts, and code already inside a running loop (a Jupyter cell)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

import pytest

from gprochat import GPROChat, ServiceUnavailableError
from gprochat.providers._session import pool
from gprochat.providers._sync import run_in_background
from gprochat.server import BackgroundServer

from ..processes import clean_env
from ..scripted import RecordedRequest, ScriptedServer, full_response

HELLO = [{"role": "user", "content": "Hello!"}]


def test_create_completion_in_a_plain_script(echo_server: BackgroundServer) -> None:
    script = textwrap.dedent(
        """
        import sys
        from gprochat import GPROChat
        for chunk in GPROChat.create_completion(
            "", [{"role": "user", "content": "from a script"}], base_url=sys.argv[1], timeout=30
        ):
            print(chunk, end="")
        """
    )
    result = subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error", "-c", script, echo_server.base_url],
        capture_output=True, text=True, timeout=60, env=clean_env(),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("from a script")
    assert result.stderr == ""


def test_create_completion_inside_a_running_loop(echo_server: BackgroundServer) -> None:
    async def cell() -> str:
        # Synchronous code in the loop's own thread, as in a Jupyter cell.
        asyncio.get_running_loop()
        return "".join(GPROChat.create_completion("", HELLO, base_url=echo_server.base_url))

    assert asyncio.run(cell()).endswith("Hello!")


def test_create_inside_a_running_loop_passes_options(echo_server: BackgroundServer) -> None:
    async def cell() -> str:
        return GPROChat.create(
            "", HELLO, base_url=echo_server.base_url, history="native", timeout=30, max_retries=0
        )

    assert asyncio.run(cell()).endswith("Hello!")


async def test_sync_errors_are_the_same_exceptions() -> None:
    async def unavailable(request: RecordedRequest, writer: asyncio.StreamWriter) -> None:
        writer.write(full_response(503, b'{"error": {"message": "busy"}}'))

    async with ScriptedServer(unavailable) as server:
        with pytest.raises(ServiceUnavailableError, match="busy"):
            # Runs on the background loop while this test's loop keeps serving.
            await asyncio.to_thread(
                lambda: list(GPROChat.create_completion("", HELLO, base_url=server.base_url, max_retries=0))
            )


def test_close_releases_the_background_sessions(echo_server: BackgroundServer) -> None:
    async def open_sessions() -> int:
        return pool.open_sessions()

    assert "".join(GPROChat.create_completion("", HELLO, base_url=echo_server.base_url))
    assert run_in_background(open_sessions()) == 1
    with GPROChat():
        pass  # leaving the block closes the synchronous path's pooled connections
    assert run_in_background(open_sessions()) == 0
    assert "".join(GPROChat.create_completion("", HELLO, base_url=echo_server.base_url))
