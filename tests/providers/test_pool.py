"""Pooled sessions: connections reused, never shared across loops, always closed cleanly."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
import textwrap
import threading
import warnings

from gprochat import GPROChat
from gprochat.providers._session import pool
from gprochat.server import BackgroundServer

from ..processes import clean_env
from ..scripted import LAST_CHUNK, RecordedRequest, ScriptedServer, chunk, head

HELLO = [{"role": "user", "content": "Hello!"}]


async def answer_ok(request: RecordedRequest, writer: asyncio.StreamWriter) -> None:
    writer.write(head() + chunk(b"ok") + LAST_CHUNK)


async def wait_for(condition, timeout: float = 2.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def test_sequential_requests_reuse_one_connection() -> None:
    async with ScriptedServer(answer_ok) as server:
        for _ in range(3):
            assert await GPROChat.create_async("", HELLO, base_url=server.base_url) == "ok"
        assert len(server.requests) == 3
        assert server.connections == 1
        assert {request.connection for request in server.requests} == {1}


async def test_aclose_closes_the_connection_and_the_next_call_opens_one() -> None:
    async with ScriptedServer(answer_ok) as server:
        await GPROChat.create_async("", HELLO, base_url=server.base_url)
        assert pool.open_sessions() == 1
        await GPROChat.aclose()
        assert pool.open_sessions() == 0
        assert await wait_for(lambda: server.disconnects == 1)
        await GPROChat.create_async("", HELLO, base_url=server.base_url)
        assert server.connections == 2


async def test_async_with_closes_on_exit() -> None:
    async with ScriptedServer(answer_ok) as server:
        async with GPROChat() as provider:
            assert await provider.create_async("", HELLO, base_url=server.base_url) == "ok"
            assert server.disconnects == 0
        assert await wait_for(lambda: server.disconnects == 1)
        assert pool.open_sessions() == 0


def test_each_asyncio_run_gets_its_own_session_and_closes_it(echo_server: BackgroundServer) -> None:
    sessions = []

    async def one_call() -> str:
        text = await GPROChat.create_async("", HELLO, base_url=echo_server.base_url)
        sessions.append(await pool.session(None))
        return text

    def run_twice() -> None:
        for _ in range(2):
            assert asyncio.run(one_call()).endswith("Hello!")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # A thread of its own: the test itself must not run inside a loop.
        thread = threading.Thread(target=run_twice)
        thread.start()
        thread.join(timeout=30)
        gc.collect()
    assert len(sessions) == 2 and sessions[0] is not sessions[1]
    assert all(session.closed for session in sessions)  # closed as each asyncio.run ended
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []


SCRIPT = """
import asyncio, gc, sys
from gprochat import GPROChat

url = sys.argv[1]
messages = [{"role": "user", "content": "Hi"}]

async def main():
    return await GPROChat.create_async("", messages, base_url=url)

for _ in range(3):
    print(asyncio.run(main()))
# The synchronous path too: its background loop is closed at exit.
print("".join(GPROChat.create_completion("", messages, base_url=url)))
gc.collect()
"""


def test_a_script_exits_without_unclosed_warnings(echo_server: BackgroundServer) -> None:
    result = subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error", "-c", textwrap.dedent(SCRIPT), echo_server.base_url],
        capture_output=True, text=True, timeout=60, env=clean_env(),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("Hi") == 4
    assert "Unclosed" not in result.stderr
    assert result.stderr.strip() == ""
