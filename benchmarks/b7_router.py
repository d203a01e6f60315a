"""B7, the router: its overhead, and failover under faults against LiteLLM's proxy.

Upstreams: scripted OpenAI-compatible servers on loopback, all in one process of
their own (``python -m benchmarks.b7_router upstreams KIND...``): ``healthy`` streams
``UPSTREAM_CHUNKS`` content chunks ``CHUNK_DELAY`` s apart, then ``[DONE]``; ``429``
answers 429 with ``Retry-After: RETRY_AFTER``; ``500`` answers 500; ``dead`` is a
loopback port nobody listens on (connection refused). The upstream process logs the
arrival of every request, per upstream.

(a) Overhead: ``gprochat serve --config`` with one model over three healthy
    deployments (round-robin, three healthy upstreams) vs the same server over one of
    them directly (``backend = "openai"``); server CPU per streamed
    ``/v1/chat/completions`` answer (psutil: the server process and its children,
    before/after a round of ``N`` chats at ``CONCURRENCY``), rounds interleaved.
(b) Failover: ours (round-robin over healthy, 429, dead, 500) vs LiteLLM's proxy
    (``.bench-peers/litellm``, the same four as one model group), each freshly started
    per round; 200 streamed chats at 16 concurrent. Success = HTTP 200 and exactly the
    healthy upstream's text (no text lost or doubled). Also counted: requests that
    reached the 429 upstream inside a Retry-After window it had announced.

Nothing leaves loopback: LiteLLM runs with ``LITELLM_LOCAL_MODEL_COST_MAP=True`` and
telemetry off, and its deployments' ``api_base`` are the loopback upstreams.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from ._proc import REPO_ROOT, child_env, read_head, stop_process, until_closed, wait_until_ready
from ._report import Row, paired_ratio, percentile

__all__ = ["run", "LITELLM_REQUIREMENT", "LITELLM_VENV", "locate_litellm", "install_litellm"]

LITELLM_REQUIREMENT = "litellm[proxy]==1.108.7"
LITELLM_VENV = Path(REPO_ROOT) / ".bench-peers" / "litellm"
UPSTREAM_CHUNKS = 20
CHUNK_DELAY = 0.005  # seconds between the healthy upstream's chunks
RETRY_AFTER = 5
CONCURRENCY = 16
API_KEY = "sk-bench-key"  # LiteLLM wants its master key to start with sk-
MODEL = "bench"
EXPECTED_TEXT = "".join(f"w{index} " for index in range(UPSTREAM_CHUNKS))


# -- the scripted upstreams (their own process) -------------------------------------


def _sse_chunk(content: Optional[str], finish: Optional[str] = None) -> bytes:
    delta = {} if content is None else {"content": content}
    event = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"


def _frame(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


async def _serve_upstreams(kinds: Sequence[str]) -> None:
    log: list[tuple[str, float, int]] = []  # (upstream, arrival, status)
    first = _frame(
        b'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,'
        b'"model":"bench","choices":[{"index":0,"delta":{"role":"assistant","content":""},'
        b'"finish_reason":null}]}\n\n'
    )
    frames = [_frame(_sse_chunk(f"w{index} ")) for index in range(UPSTREAM_CHUNKS)]
    last = _frame(_sse_chunk(None, "stop") + b"data: [DONE]\n\n") + b"0\r\n\r\n"

    def handler(name: str, kind: str) -> Any:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while True:
                head, length = await read_head(reader)
                if length:
                    await reader.readexactly(length)
                if head.startswith(b"GET /bench/log"):
                    body = json.dumps(log).encode()
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b"
                                 % (len(body), body))
                    await writer.drain()
                    continue
                if head.startswith(b"POST /bench/reset"):
                    log.clear()
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                    await writer.drain()
                    continue
                arrival = time.monotonic()
                if kind == "429":
                    log.append((name, arrival, 429))
                    body = b'{"error":{"message":"rate limited","type":"rate_limit"}}'
                    writer.write(
                        b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\n"
                        b"Retry-After: %d\r\nContent-Length: %d\r\n\r\n%b"
                        % (RETRY_AFTER, len(body), body)
                    )
                    await writer.drain()
                    continue
                if kind == "500":
                    log.append((name, arrival, 500))
                    body = b'{"error":{"message":"internal error","type":"server_error"}}'
                    writer.write(
                        b"HTTP/1.1 500 Internal Server Error\r\n"
                        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%b"
                        % (len(body), body)
                    )
                    await writer.drain()
                    continue
                log.append((name, arrival, 200))
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                    b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n" + first
                )
                for frame in frames:
                    await asyncio.sleep(CHUNK_DELAY)
                    writer.write(frame)
                    await writer.drain()
                writer.write(last)
                await writer.drain()

        return until_closed(handle)

    ports: dict[str, int] = {}
    servers = []
    for index, kind in enumerate(kinds):
        name = f"{kind}-{index}"
        if kind == "dead":
            probe = socket.socket()
            probe.bind(("127.0.0.1", 0))
            ports[name] = probe.getsockname()[1]
            probe.close()  # nobody listens there: connection refused
            continue
        server = await asyncio.start_server(handler(name, kind), "127.0.0.1", 0, backlog=1024)
        ports[name] = server.sockets[0].getsockname()[1]
        servers.append(server)
    print(json.dumps(ports), flush=True)
    await asyncio.gather(*(server.serve_forever() for server in servers))


class Upstreams:
    """The upstream process: ``ports`` by name (``healthy-0``, ``429-1``, ...)."""

    def __init__(self, kinds: Sequence[str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.b7_router", "upstreams", *kinds],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, env=child_env(),
        )
        assert self.process.stdout is not None
        self.ports: dict[str, int] = json.loads(self.process.stdout.readline())
        self.control = next(port for name, port in self.ports.items() if name.startswith("healthy"))

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}/v1"

    def log(self) -> list[tuple[str, float, int]]:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.control}/bench/log") as reply:
            return [(str(name), float(t), int(status)) for name, t, status in json.loads(reply.read())]

    def reset(self) -> None:
        import urllib.request

        request = urllib.request.Request(
            f"http://127.0.0.1:{self.control}/bench/reset", data=b"", method="POST"
        )
        urllib.request.urlopen(request).close()

    def stop(self) -> None:
        stop_process(self.process)


# A request that reaches the 429 upstream within this long of a 429 it sent was on its
# way before any server could have read that 429 (the first burst of 16 concurrent
# requests): it is counted apart, as in flight, not as ignoring Retry-After.
IN_FLIGHT_GRACE = 0.05


def inside_retry_after(log: Sequence[tuple[str, float, int]]) -> tuple[int, int, int]:
    """For the 429 upstream: ``(requests arriving after the first 429 was sent and before
    its Retry-After passed, requests inside any Retry-After window it had announced,
    requests in flight when a 429 was sent)``: the last two exclude each other; a
    request arriving less than ``IN_FLIGHT_GRACE`` after an earlier 429 is in flight."""
    arrivals = sorted(t for _, t, status in log if status == 429)
    if not arrivals:
        return 0, 0, 0
    first = arrivals[0]
    after_first = sum(1 for t in arrivals[1:] if first + IN_FLIGHT_GRACE <= t < first + RETRY_AFTER)
    inside = in_flight = 0
    for index, t in enumerate(arrivals[1:], start=1):
        earlier = [s for s in arrivals[:index] if s < t]
        if any(s + IN_FLIGHT_GRACE <= t < s + RETRY_AFTER for s in earlier):
            inside += 1
        elif any(t < s + IN_FLIGHT_GRACE for s in earlier):
            in_flight += 1
    return after_first, inside, in_flight


# -- the servers under test ----------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _toml_deployment(name: str, base_url: str, model: str = MODEL) -> str:
    return (
        f'[[models."{model}".deployments]]\nname = "{name}"\nbackend = "openai"\n'
        f'base-url = "{base_url}"\nmodel = "{MODEL}"\nread-timeout = 30\nconnect-timeout = 5\n'
    )


class Server:
    """One server process under test (``gprochat serve --config`` or LiteLLM's proxy)."""

    def __init__(self, command: list[str], env: dict[str, str], health: str, port: int,
                 log_path: Path) -> None:
        self.port = port
        self._log = open(log_path, "wb")  # noqa: SIM115 (open for the process life; stop() closes)
        self.process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            env=env, cwd=str(log_path.parent),
        )
        try:
            wait_until_ready(self.process, f"http://127.0.0.1:{port}{health}", 120, interval=0.2)
        except (TimeoutError, ChildProcessError):
            self.stop()
            raise RuntimeError(f"B7: {command[:3]} did not start; see {log_path}") from None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/chat/completions"

    def cpu_seconds(self) -> float:
        import psutil

        process = psutil.Process(self.process.pid)
        total = 0.0
        for each in [process, *process.children(recursive=True)]:
            try:
                times = each.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
        return total

    def stop(self) -> None:
        stop_process(self.process)
        self._log.close()


def start_gprochat(workdir: Path, label: str, body: str) -> Server:
    port = _free_port()
    config = workdir / f"{label}.toml"
    config.write_text(
        f'host = "127.0.0.1"\nport = {port}\napi-key = "{API_KEY}"\n'
        f'rate-limit = "1000000/second"\nmax-streams = 4096\n' + body
    )
    return Server(
        [sys.executable, "-m", "gprochat", "serve", "--config", str(config)],
        child_env(), "/healthz", port, workdir / f"{label}.log",
    )


def gprochat_direct(workdir: Path, upstreams: Upstreams) -> Server:
    return start_gprochat(workdir, "direct", (
        f'backend = "openai"\nopenai-base-url = "{upstreams.url("healthy-0")}"\n'
        f'openai-model = "{MODEL}"\n'
    ))


def gprochat_router(workdir: Path, upstreams: Upstreams, names: Sequence[str], label: str,
                    warm: Optional[str] = None) -> Server:
    """``names`` as one model, round-robin; ``warm``: a second model, for warming up."""
    extra = "" if warm is None else (
        f'\n[models."{WARM_MODEL}"]\n' + _toml_deployment(warm, upstreams.url(warm), WARM_MODEL)
    )
    return start_gprochat(workdir, label, (
        f'[router]\ndefault-model = "{MODEL}"\n\n[models."{MODEL}"]\nstrategy = "round-robin"\n\n'
        + "\n".join(_toml_deployment(name, upstreams.url(name)) for name in names) + extra
    ))


def _litellm_bin() -> Path:
    return LITELLM_VENV / "bin" / "litellm"


def locate_litellm() -> tuple[Optional[str], str]:
    """``(litellm executable, description)``, or ``None`` and how to get it."""
    binary = _litellm_bin()
    if not binary.exists():
        return None, (
            f"LiteLLM is missing: `python -m benchmarks --install-peers` puts "
            f"{LITELLM_REQUIREMENT} in .bench-peers/litellm; B7 (b) is skipped"
        )
    out = subprocess.run(
        [str(LITELLM_VENV / "bin" / "python"), "-c",
         "import importlib.metadata as m; print(m.version('litellm'))"],
        capture_output=True, text=True, timeout=60,
    )
    return str(binary), f"litellm {out.stdout.strip() or '?'} in its own virtualenv (.bench-peers/litellm)"


def install_litellm() -> str:
    """Create ``.bench-peers/litellm`` with ``LITELLM_REQUIREMENT``."""
    python = LITELLM_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", LITELLM_REQUIREMENT], check=True)
    return str(_litellm_bin())


def litellm_config(upstreams: Upstreams, names: Sequence[str], warm: str) -> str:
    """A model group of the four upstreams, with LiteLLM's failover settings: retries
    (each retry may pick another deployment), a deployment cooled after its first
    failure for as long as the rate-limited upstream's Retry-After."""
    deployments = "".join(
        f"  - model_name: {MODEL}\n    litellm_params:\n      model: openai/{MODEL}\n"
        f"      api_base: {upstreams.url(name)}\n      api_key: sk-upstream\n"
        f"      stream_timeout: 30\n"
        for name in names
    ) + (
        f"  - model_name: {WARM_MODEL}\n    litellm_params:\n      model: openai/{MODEL}\n"
        f"      api_base: {upstreams.url(warm)}\n      api_key: sk-upstream\n"
    )
    return (
        "model_list:\n" + deployments +
        "router_settings:\n  routing_strategy: simple-shuffle\n  num_retries: 3\n"
        f"  allowed_fails: 1\n  cooldown_time: {RETRY_AFTER}\n  retry_after: 0\n"
        "litellm_settings:\n  telemetry: false\n  drop_params: true\n  set_verbose: false\n"
        "  request_timeout: 30\n"
        f"general_settings:\n  master_key: {API_KEY}\n  disable_spend_logs: true\n"
    )


def start_litellm(
    workdir: Path, binary: str, upstreams: Upstreams, names: Sequence[str], warm: str
) -> Server:
    port = _free_port()
    config = workdir / "litellm.yaml"
    config.write_text(litellm_config(upstreams, names, warm))
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    env.update(
        LITELLM_LOCAL_MODEL_COST_MAP="True",  # no fetch of the model cost map from GitHub
        LITELLM_TELEMETRY="False",
        LITELLM_LOG="ERROR",
        DISABLE_ADMIN_UI="True",
        NO_DOCS="True",
        NO_PROXY="*",
        no_proxy="*",
    )
    for key in ("DATABASE_URL", "REDIS_HOST", "REDIS_URL", "HTTP_PROXY", "HTTPS_PROXY",
                "http_proxy", "https_proxy"):
        env.pop(key, None)
    return Server(
        [binary, "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
         "--num_workers", "1", "--telemetry", "False"],
        env, "/health/liveliness", port, workdir / "litellm.log",
    )


# -- the load -------------------------------------------------------------------------


def _text_of(raw: bytes) -> tuple[str, bool]:
    """The streamed answer's text, and whether it ended with ``[DONE]`` and no error."""
    text: list[str] = []
    clean = False
    for event in raw.split(b"\n\n"):
        event = event.strip()
        if not event.startswith(b"data:"):
            continue
        data = event[5:].strip()
        if data == b"[DONE]":
            clean = True
            continue
        chunk = json.loads(data)
        if "error" in chunk:
            return "".join(text), False
        for choice in chunk.get("choices") or []:
            text.append((choice.get("delta") or {}).get("content") or "")
    return "".join(text), clean


async def _chats(
    url: str, count: int, concurrency: int = CONCURRENCY, model: str = MODEL
) -> tuple[int, list[float], dict[str, int]]:
    """``count`` streamed chats, ``concurrency`` at a time: (answered right, latencies,
    how the others failed: ``HTTP 429: <the start of the body>``, ``error event``, ...)."""
    import aiohttp

    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    good = 0
    failures: dict[str, int] = {}
    timeout = aiohttp.ClientTimeout(total=120)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:

        async def one(index: int) -> None:
            nonlocal good
            payload = {"model": model, "stream": True,
                       "messages": [{"role": "user", "content": f"hello {index}"}]}
            async with gate:
                started = time.perf_counter()
                try:
                    async with session.post(
                        url, json=payload, headers={"Authorization": f"Bearer {API_KEY}"}
                    ) as reply:
                        raw = await reply.read()
                        status = reply.status
                except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                    status, raw = 0, repr(exc).encode()
                latencies.append(time.perf_counter() - started)
            if status == 200:
                text, clean = _text_of(raw)
                if clean and text == EXPECTED_TEXT:
                    good += 1
                    return
                why = "wrong text" if clean else f"error event: {raw[-300:]!r}"
            else:
                why = f"HTTP {status}: {raw[:160]!r}"
            failures[why] = failures.get(why, 0) + 1

        await asyncio.gather(*(one(index) for index in range(count)))
    return good, latencies, failures


def _round(
    server: Server, count: int, model: str = MODEL
) -> tuple[float, int, list[float], dict[str, int]]:
    """CPU seconds per request, answered right, latencies, failures (as ``_chats``)."""
    before = server.cpu_seconds()
    good, latencies, failures = asyncio.run(_chats(server.url, count, model=model))
    return (server.cpu_seconds() - before) / count, good, latencies, failures


# -- (a) and (b) ------------------------------------------------------------------------


def overhead(quick: bool, workdir: Path) -> list[Row]:
    rounds, per_round = (3, 100) if quick else (7, 300)
    upstreams = Upstreams(["healthy", "healthy", "healthy"])
    names = list(upstreams.ports)
    direct = routed = None
    try:
        direct = gprochat_direct(workdir, upstreams)
        routed = gprochat_router(workdir, upstreams, names, "routed-healthy")
        for server in (direct, routed):  # warm both (imports, connection pools)
            _round(server, 32)
        cpu: dict[str, list[float]] = {"direct": [], "routed": []}
        for index in range(rounds):
            order = [("direct", direct), ("routed", routed)]
            for label, server in order if index % 2 == 0 else order[::-1]:
                per_request, good, _, failures = _round(server, per_round)
                if good != per_round:
                    raise RuntimeError(
                        f"B7 (a): {label} answered {good}/{per_round} right: {failures}")
                cpu[label].append(per_request * 1000)
        spread = {name: sum(1 for entry in upstreams.log() if entry[0] == name) for name in names}
    finally:
        for each in (direct, routed):
            if each is not None:
                each.stop()
        upstreams.stop()
    return [Row(
        "B7", "router overhead: server CPU/request, 3 healthy deployments vs the backend directly",
        statistics.median(cpu["routed"]), statistics.median(cpu["direct"]), "ms",
        paired_ratio(cpu["routed"], cpu["direct"]), 1.10, "lower", "<= 1.10x",
        note=(f"{rounds} interleaved pairs x {per_round} streamed /v1/chat/completions at "
              f"{CONCURRENCY} concurrent; OpenAI-compatible scripted upstreams "
              f"({UPSTREAM_CHUNKS} chunks, {CHUNK_DELAY * 1000:g} ms apart); round-robin; "
              f"requests per upstream over the run: {spread}"),
    )]


# The last healthy one is apart: a second model, ``WARM_MODEL``, that warms each server
# up (LiteLLM's first answers take seconds: imports and set-up on first use) before
# the measured round, without touching the four.
FAULT_KINDS = ["healthy", "429", "dead", "500", "healthy"]
WARM_MODEL = "warm"
WARM_UP = 32


def failover(quick: bool, workdir: Path, litellm: Optional[str]) -> list[Row]:
    rounds, count = (1, 60) if quick else (3, 200)
    results: dict[str, dict[str, list[float]]] = {
        side: {"success": [], "p50": [], "p99": [], "cpu": [], "after_first": [], "inside": [],
               "in_flight": []}
        for side in ("ours", "litellm")
    }
    received: dict[str, list[dict[str, int]]] = {"ours": [], "litellm": []}
    sides = ["ours"] + (["litellm"] if litellm else [])
    for index in range(rounds):
        for side in sides if index % 2 == 0 else sides[::-1]:
            upstreams = Upstreams(FAULT_KINDS)
            *names, warm = list(upstreams.ports)
            server = None
            try:
                if side == "ours":
                    server = gprochat_router(workdir, upstreams, names, "routed-faults", warm)
                else:
                    assert litellm is not None
                    server = start_litellm(workdir, litellm, upstreams, names, warm)
                _, warmed, _, _ = _round(server, WARM_UP, WARM_MODEL)
                if warmed != WARM_UP:
                    raise RuntimeError(f"B7 (b): {side} answered {warmed}/{WARM_UP} warm-up chats")
                upstreams.reset()
                per_request, good, latencies, failures = _round(server, count)
                log = upstreams.log()
            finally:
                if server is not None:
                    server.stop()
                upstreams.stop()
            after_first, inside, in_flight = inside_retry_after(log)
            data = results[side]
            data["success"].append(100 * good / count)
            data["p50"].append(percentile(latencies, 50))
            data["p99"].append(percentile(latencies, 99))
            data["cpu"].append(per_request * 1000)
            data["after_first"].append(after_first)
            data["inside"].append(inside)
            data["in_flight"].append(in_flight)
            received[side].append({  # the dead one refuses connections: nothing to count
                name: sum(1 for e in log if e[0] == name) for name in names if "dead" not in name
            })
            print(f"   {side}: {good}/{count} right, p50 {data['p50'][-1]:.3f} s, "
                  f"p99 {data['p99'][-1]:.3f} s, {data['cpu'][-1]:.1f} ms CPU/request, "
                  f"requests per upstream {received[side][-1]}, to the 429 upstream inside "
                  f"its Retry-After: {after_first} after the first 429, {inside} in any window, "
                  f"{in_flight} in flight" + (f"; failed: {failures}" if failures else ""),
                  flush=True)
    ours, peer = results["ours"], results["litellm"]
    have_peer = bool(peer["cpu"])

    def med(values: list[float]) -> float:
        return statistics.median(values) if values else float("nan")

    scenario = (f"{rounds} round(s) x {count} streamed chats at {CONCURRENCY} concurrent over "
                f"healthy, 429 (Retry-After {RETRY_AFTER}), dead, 500; fresh servers each round, "
                f"warmed up with {WARM_UP} chats to a second model on a fifth upstream")
    peer_note = "" if have_peer else "; LiteLLM not installed: baseline skipped"
    return [
        Row("B7", "failover: success rate", med(ours["success"]), med(peer["success"]), "%",
            paired_ratio(ours["success"], peer["success"]), 100.0, "higher", "ours = 100%",
            value=min(ours["success"]), note=scenario + peer_note),
        Row("B7", "failover: p50 latency", med(ours["p50"]), med(peer["p50"]), "s",
            paired_ratio(ours["p50"], peer["p50"]), better="lower", target_text="-"),
        Row("B7", "failover: p99 latency", med(ours["p99"]), med(peer["p99"]), "s",
            paired_ratio(ours["p99"], peer["p99"]), 1.0 if have_peer else None, "lower",
            "<= 1x"),
        Row("B7", "failover: server CPU/request", med(ours["cpu"]), med(peer["cpu"]), "ms",
            paired_ratio(ours["cpu"], peer["cpu"]), 0.2 if have_peer else None, "lower",
            "<= 0.2x", note="psutil user+system of the server process and its children"),
        Row("B7", "failover: requests to the 429 upstream inside its Retry-After",
            med(ours["inside"]), med(peer["inside"]), "", [], 0.0, "lower", "ours = 0",
            value=max(ours["inside"]),
            note=(f"arrivals at the 429 upstream from {IN_FLIGHT_GRACE * 1000:g} ms to "
                  f"{RETRY_AFTER} s after an earlier 429 it sent (earlier: in flight, apart), per "
                  f"round: ours {ours['inside']}, LiteLLM {peer['inside']}; after the first 429 "
                  f"only: ours {ours['after_first']}, LiteLLM {peer['after_first']}; in flight: "
                  f"ours {ours['in_flight']}, LiteLLM {peer['in_flight']}; requests per upstream "
                  f"per round: ours "
                  f"{received['ours']}, LiteLLM {received['litellm']}")),
    ]


def run(quick: bool) -> list[Row]:
    litellm, litellm_note = locate_litellm()
    print(f"   peer: {litellm_note}", flush=True)
    with tempfile.TemporaryDirectory(prefix="b7-") as tmp:
        workdir = Path(tmp)
        rows = overhead(quick, workdir)
        rows += failover(quick, workdir, litellm)
    return rows


if __name__ == "__main__":
    if sys.argv[1:2] == ["upstreams"]:
        import contextlib

        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_serve_upstreams(sys.argv[2:]))
    else:
        raise SystemExit("usage: python -m benchmarks.b7_router upstreams KIND...")
