"""``gprochat serve`` as a process: graceful shutdown on SIGTERM or Ctrl-C, a second
Ctrl-C that exits at once, and what its log says."""

from __future__ import annotations

import asyncio
import json
import signal
import time

import aiohttp
import pytest

from ..processes import ServeProcess, serve_process
from .helpers import signed

LONG_TEXT = " ".join(f"word{i}" for i in range(20))  # ~15 chunks of two words


async def _refuses_new_connections(server: ServeProcess) -> None:
    """Wait until the server, told to stop, refuses a new connection (by events, not a
    fixed sleep: on a starved machine the signal may be handled late)."""
    await _output_says(server, "Shutting down")
    deadline = time.monotonic() + 20
    connector = aiohttp.TCPConnector(force_close=True)  # each try a new connection
    async with aiohttp.ClientSession(connector=connector) as probe:
        while True:
            try:
                async with probe.get(server.base_url + "/healthz") as answered:
                    await answered.read()
            except aiohttp.ClientConnectionError:
                return
            assert time.monotonic() < deadline, "still accepting connections 20 s after SIGTERM"
            await asyncio.sleep(0.05)


async def _stream_through_shutdown(server: ServeProcess) -> tuple[str, bool, float]:
    """Start a slow answer, SIGTERM the server after its first chunk; (text, complete, secs)."""
    received: list[bytes] = []
    complete = False
    async with aiohttp.ClientSession() as session:
        data = json.dumps(signed(LONG_TEXT)).encode()
        async with session.post(server.base_url + "/api/generate", data=data) as response:
            assert response.status == 200
            received.append(await response.content.readany())
            server.process.send_signal(signal.SIGTERM)
            started = time.monotonic()
            # Shutting down: new connections are refused while this answer goes on.
            await _refuses_new_connections(server)
            try:
                async for chunk in response.content.iter_any():
                    received.append(chunk)
                complete = True
            except aiohttp.ClientPayloadError:
                complete = False
    took = time.monotonic() - started
    return b"".join(received).decode(), complete, took


async def test_in_flight_stream_finishes_within_the_shutdown_timeout() -> None:
    with serve_process("--echo-delay", "0.15", "--shutdown-timeout", "20") as server:
        text, complete, _ = await _stream_through_shutdown(server)
        assert complete and text.endswith(LONG_TEXT)
        # uvicorn re-raises the SIGTERM it handled once it is done: exit "by signal".
        assert await asyncio.to_thread(server.process.wait, 20) in (0, -signal.SIGTERM)
        assert "timeout graceful shutdown exceeded" not in server.output()


async def test_in_flight_stream_is_cut_past_the_shutdown_timeout() -> None:
    with serve_process("--echo-delay", "0.5", "--shutdown-timeout", "1") as server:
        text, complete, took = await _stream_through_shutdown(server)
        assert not complete, "a cut answer must not end like a complete one"
        assert 0 < len(text) < len(LONG_TEXT)
        assert took < 6  # cut at the deadline, not after the whole 7-second answer
        await asyncio.to_thread(server.process.wait, 20)
        assert "timeout graceful shutdown exceeded" in server.output()


async def _output_says(server: ServeProcess, text: str) -> None:
    deadline = time.monotonic() + 20
    while text not in server.output():
        assert server.process.poll() is None, server.output()
        assert time.monotonic() < deadline, f"{text!r} not logged:\n{server.output()}"
        await asyncio.sleep(0.05)


async def test_ctrl_c_lets_an_open_stream_finish_and_exits_0() -> None:
    with serve_process("--echo-delay", "0.1", "--shutdown-timeout", "30") as server:
        async with aiohttp.ClientSession() as session:
            data = json.dumps(signed(LONG_TEXT)).encode()
            async with session.post(server.base_url + "/api/generate", data=data) as response:
                await response.content.readany()
                server.process.send_signal(signal.SIGINT)
                text = (await response.read()).decode()
        assert text.endswith(LONG_TEXT)
        assert await asyncio.to_thread(server.process.wait, 20) == 0
        assert "Traceback" not in server.output()


async def test_a_second_ctrl_c_exits_at_once_with_one_line_and_no_traceback() -> None:
    # The answer would take about 10 s, the shutdown timeout is a minute: only the
    # second Ctrl-C can end the process while the stream is open.
    with serve_process("--echo-delay", "0.5", "--shutdown-timeout", "60") as server:
        async with aiohttp.ClientSession() as session:
            data = json.dumps(signed(LONG_TEXT + " " + LONG_TEXT)).encode()
            async with session.post(server.base_url + "/api/generate", data=data) as response:
                await response.content.readany()
                server.process.send_signal(signal.SIGINT)
                await _output_says(server, "Shutting down")  # the first one was handled
                server.process.send_signal(signal.SIGINT)
                status = await asyncio.to_thread(server.process.wait, 20)
                with pytest.raises(aiohttp.ClientPayloadError):  # cut, never a clean end
                    await response.read()
        output = server.output()
    assert status == 130, output
    assert "Traceback" not in output and "CancelledError" not in output
    entries = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    forced = [e for e in entries if e.get("event") == "forced_exit"]
    assert [(e["level"], e["answers_cut"]) for e in forced] == [("warning", 1)], output
    assert forced[0]["message"] == "Second Ctrl-C: exiting now, cutting 1 answer still running"
    assert entries[-1] == forced[0]  # nothing after it: the process ended there


async def test_a_second_ctrl_c_under_workers_exits_at_once_with_130_and_no_traceback() -> None:
    # As a terminal does it: each Ctrl-C reaches every process of the group, the
    # process manager and both workers. The shutdown timeout is a minute and the
    # answer about 10 s: only the second Ctrl-C can end the group while it streams.
    with serve_process("--workers", "2", "--echo-delay", "0.5", "--shutdown-timeout", "60",
                       new_session=True) as server:
        async with aiohttp.ClientSession() as session:
            data = json.dumps(signed(LONG_TEXT + " " + LONG_TEXT)).encode()
            async with session.post(server.base_url + "/api/generate", data=data) as response:
                await response.content.readany()
                server.interrupt(group=True)
                await _output_says(server, "Shutting down")  # a worker handled the first
                await _output_says(server, "Received SIGINT")  # and the process manager
                server.interrupt(group=True)
                status = await asyncio.to_thread(server.wait, 30)
                with pytest.raises(aiohttp.ClientPayloadError):  # cut, never a clean end
                    await response.read()
        output = server.output()
    assert status == 130, output
    for noise in ("Traceback", "CancelledError", "KeyboardInterrupt"):
        assert noise not in output, output
    entries = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    forced = [e for e in entries if e.get("event") == "forced_exit"]
    # The worker streaming the answer says it cuts it; the manager says it ends the workers.
    assert {"Second Ctrl-C: exiting now, cutting 1 answer still running",
            "Second Ctrl-C: exiting now, cutting the answers still running in 2 workers"
            } <= {e["message"] for e in forced}, output
    assert all(e["level"] == "warning" for e in forced)


async def test_a_second_ctrl_c_sent_to_the_workers_manager_alone_ends_its_workers_too() -> None:
    # ``kill -INT`` to the manager's pid only (a supervisor that signals its child):
    # the manager passes the second one on to its workers and waits for them.
    with serve_process("--workers", "2", "--echo-delay", "0.5", "--shutdown-timeout", "60") as server:
        async with aiohttp.ClientSession() as session:
            data = json.dumps(signed(LONG_TEXT + " " + LONG_TEXT)).encode()
            async with session.post(server.base_url + "/api/generate", data=data) as response:
                await response.content.readany()
                server.interrupt()
                await _output_says(server, "Shutting down")  # the manager's SIGTERM reached a worker
                server.interrupt()
                status = await asyncio.to_thread(server.wait, 30)
                with pytest.raises(aiohttp.ClientPayloadError):
                    await response.read()
        output = server.output()
    assert status == 130, output
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output
    forced = [json.loads(line)["message"] for line in output.splitlines()
              if line.startswith("{") and json.loads(line).get("event") == "forced_exit"]
    assert "Second Ctrl-C: exiting now, cutting 1 answer still running" in forced, output


async def test_access_log_is_json_without_secrets_or_texts() -> None:
    secret_text = "my very private question"
    with serve_process("--password", "hunter2pw", "--secret-key", "k3y-s3cret") as server:
        body = signed(secret_text, secret="k3y-s3cret", password="hunter2pw")
        async with aiohttp.ClientSession() as session:
            async with session.post(server.base_url + "/api/generate", data=json.dumps(body)) as r:
                assert r.status == 200
                await r.read()
            async with session.post(server.base_url + "/api/generate", data=b"{bad") as r:
                assert r.status == 400
        server.process.terminate()
        await asyncio.to_thread(server.process.wait, 20)
        output = server.output()
    entries = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    access = [e for e in entries if e["logger"] == "gprochat.access" and e["route"] == "/api/generate"]
    assert [(e["method"], e["status"]) for e in access] == [("POST", 200), ("POST", 400)]
    assert access[0]["bytes"] > 0 and access[0]["client"] == "127.0.0.1" and "ttfb_ms" in access[0]
    for leaked in (secret_text, "hunter2pw", "k3y-s3cret", body["sign"]):
        assert leaked not in output
