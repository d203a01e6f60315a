"""The local backend: a real GGUF model (SmolLM2-135M-Instruct) run by llama.cpp in our server.

One server with the model loaded serves most of this module (loading is the slow part);
answers are short, greedy (temperature 0) and seeded. Without llama-cpp-python and the
model these tests skip, except in CI (the CI environment variable), where they fail.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gprochat.providers import GPROChat
from gprochat.server import BackgroundServer, ServerConfig, create_app
from gprochat.server.backends import Conversation, LocalBackend, Turn
from gprochat.server.backends._gguf import check_model_file, default_model_path, local_model_unavailable

from ...processes import GPROCHAT, clean_env, free_port, run_cli, served, stop_process
from ..helpers import error_message, post, signed

FRANCE = [{"role": "user", "content": "What is the capital of France?"}]
# For answers decoded alongside others. Asked as FRANCE, the model's first word is a near
# tie ("The" leads "La" by 0.13 in logits), which the different summation order of a
# shared batch can break the other way (docs/local-model.md); asked so, no choice before
# "Paris" is closer than 1.7.
CAPITAL = [{"role": "user", "content": "Name the capital of France."}]
# A prompt the model answers at length: long enough that waiting for the whole answer
# would take many seconds, so a slot freed only at its end is easy to tell apart.
LONG = [{"role": "user", "content": "Write a long story about a dragon who learns to cook."}]


def require_local_model() -> None:
    reason = local_model_unavailable()
    if reason is None:
        return
    message = f"the local backend cannot run here: {reason}"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI must install the local extra (.ci/run)")
    pytest.skip(message)


@pytest.fixture(scope="module")
def local() -> Iterator[BackgroundServer]:
    """Our server with the default model: one conversation at a time, a queue of one, greedy."""
    yield from serve_local(parallel=1, queue=1, n_ctx=1024, max_tokens=600)


def serve_local(**options: Any) -> Iterator[BackgroundServer]:
    require_local_model()
    backend = LocalBackend(temperature=0.0, **options)
    server = BackgroundServer(app=create_app(ServerConfig(rate_limit=None), backend=backend)).start()
    yield server
    server.stop()


def model_name(server: BackgroundServer) -> str:
    return str(server.app.state.backend.models()[0])


async def open_stream(server: BackgroundServer, messages: list[dict[str, str]], max_tokens: int):
    session = aiohttp.ClientSession()
    body = {"model": model_name(server), "messages": messages, "max_tokens": max_tokens,
            "stream": True, "temperature": 0, "seed": 1}
    response = await session.post(server.base_url + "/v1/chat/completions", json=body)
    return session, response


async def read_answer(response: aiohttp.ClientResponse) -> str:
    """The text of a streamed chat completion; asserts it ended with [DONE]."""
    parts, done = [], False
    async for line in response.content:
        data = line.decode().strip().removeprefix("data: ")
        if not data:
            continue
        if data == "[DONE]":
            done = True
            break
        for choice in json.loads(data)["choices"]:
            parts.append(choice["delta"].get("content") or "")
    assert done, "the stream ended without data: [DONE]"
    return "".join(parts)


async def queued(server: BackgroundServer) -> float:
    async with aiohttp.ClientSession() as session, session.get(server.base_url + "/metrics") as r:
        for line in (await r.text()).splitlines():
            if line.startswith("gprochat_backend_queued "):
                return float(line.split()[1])
    raise AssertionError("/metrics has no gprochat_backend_queued")


async def test_capital_of_france_through_api_generate(local: BackgroundServer) -> None:
    answer = await GPROChat.create_async("", FRANCE, base_url=local.base_url)
    assert "Paris" in answer


async def test_capital_of_france_through_the_openai_sdk(local: BackgroundServer) -> None:
    from openai import AsyncOpenAI

    async with AsyncOpenAI(base_url=local.base_url + "/v1", api_key="unused") as client:
        [model] = [m.id async for m in client.models.list()]
        completion = await client.chat.completions.create(
            model=model, messages=FRANCE, temperature=0, seed=42, max_tokens=24  # type: ignore[arg-type]
        )
    assert model == "SmolLM2-135M-Instruct.Q4_1"
    assert "Paris" in (completion.choices[0].message.content or "")


async def test_the_requests_sampling_reaches_the_model(local: BackgroundServer) -> None:
    from openai import AsyncOpenAI

    async with AsyncOpenAI(base_url=local.base_url + "/v1", api_key="unused") as client:
        model = model_name(local)
        stopped = await client.chat.completions.create(
            model=model, messages=FRANCE, temperature=0, max_tokens=24, stop=[" Paris"]  # type: ignore[arg-type]
        )
        short = await client.chat.completions.create(
            model=model, messages=FRANCE, temperature=0, max_tokens=2  # type: ignore[arg-type]
        )
    assert stopped.choices[0].message.content == "The capital of France is"
    assert short.choices[0].message.content == "The capital"
    # Why each ended, and the model's own token counts (not the gateway's estimate).
    assert stopped.choices[0].finish_reason == "stop"
    assert short.choices[0].finish_reason == "length"
    assert short.usage is not None and short.usage.completion_tokens == 2
    assert short.usage.prompt_tokens > 10
    assert "estimated" not in short.usage.model_dump()


async def test_a_streamed_answer_cut_by_the_token_limit_says_length(local: BackgroundServer) -> None:
    from openai import AsyncOpenAI

    async with AsyncOpenAI(base_url=local.base_url + "/v1", api_key="unused") as client:
        stream = await client.chat.completions.create(
            model=model_name(local), messages=FRANCE, temperature=0, max_tokens=3,  # type: ignore[arg-type]
            stream=True, stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    finishes = [c.finish_reason for chunk in chunks for c in chunk.choices if c.finish_reason]
    assert finishes == ["length"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3


async def test_native_history_reaches_the_model_as_turns(
    local: BackgroundServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="gprochat.server.local")
    messages = [
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": "Nice to meet you, Ada!"},
        {"role": "user", "content": "What is my name?"},
    ]
    answer = await GPROChat.create_async("", messages, base_url=local.base_url, history="native")
    assert answer.strip()
    [prompt] = [r.args[0] for r in caplog.records if r.msg == "local backend prompt: %r"]
    # SmolLM2's template (from the GGUF): each turn its own <|im_start|> block, in order.
    assert (
        "<|im_start|>user\nMy name is Ada.<|im_end|>\n"
        "<|im_start|>assistant\nNice to meet you, Ada!<|im_end|>\n"
        "<|im_start|>user\nWhat is my name?<|im_end|>\n"
        "<|im_start|>assistant\n"
    ) in prompt
    assert "User:" not in prompt  # not the flattened transcript
    backend = local.app.state.backend
    conversation = Conversation(message="What is my name?", history=(
        Turn("user", "My name is Ada."), Turn("model", "Nice to meet you, Ada!")))
    assert backend.render_prompt(conversation) == prompt


async def test_health_answers_while_the_model_generates(
    local: BackgroundServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="gprochat.server.local")
    session, response = await open_stream(local, LONG, max_tokens=200)
    async with session, response:
        await response.content.readline()  # generation has started
        async with aiohttp.ClientSession() as probe:
            for _ in range(5):
                async with probe.get(local.base_url + "/healthz") as health:
                    assert (await health.json())["status"] == "ok"
        # All five were answered while the answer was still being generated (on the
        # event loop, generation would hold them until it ended).
        assert [r for r in caplog.records if r.msg == SEQUENCE_LEFT] == []
        await read_answer(response)
    assert len([r for r in caplog.records if r.msg == SEQUENCE_LEFT]) == 1


async def test_one_at_a_time_second_client_waits_third_is_refused(local: BackgroundServer) -> None:
    first_session, first = await open_stream(local, LONG, max_tokens=64)
    async with first_session, first:
        await first.content.readline()
        second = asyncio.create_task(
            GPROChat.create_async("", FRANCE, base_url=local.base_url)
        )
        await asyncio.wait_for(until_queued(local, 1), 300)  # a guard against a hang
        status, headers, raw = await post(local.base_url, signed("A third one"))
        assert status == 503
        assert int(headers["Retry-After"]) >= 1
        assert "busy" in error_message(raw)
        first_answer = await read_answer(first)
    assert first_answer.strip()
    assert "Paris" in await asyncio.wait_for(second, 60)
    assert await queued(local) == 0


async def test_cancelling_a_stream_frees_its_place_at_once(
    local: BackgroundServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="gprochat.server.local")
    session, response = await open_stream(local, LONG, max_tokens=600)
    async with session:
        await response.content.readline()
        # One conversation at a time: the next request waits for this one's place.
        second = asyncio.create_task(read_whole(local, FRANCE))
        await asyncio.wait_for(until_queued(local, 1), 300)
        response.close()  # the client leaves mid-answer
    answer = await asyncio.wait_for(second, 300)  # a guard against a hang, not a speed test
    assert "Paris" in answer
    left = [r.args for r in caplog.records if r.msg == SEQUENCE_LEFT]
    # The abandoned answer left the batch cancelled, with hundreds of its 600 tokens not
    # generated, and only then did the waiting request get its place and finish.
    assert [reason for reason, _ in left] == ["cancelled", "stop"], left
    assert left[0][1] < 300, left


SEQUENCE_LEFT = "local backend: an answer left the batch (%s) after %d token(s)"


async def until_queued(server: BackgroundServer, count: int) -> None:
    while await queued(server) < count:
        await asyncio.sleep(0.02)


@pytest.fixture(scope="module")
def batched() -> Iterator[BackgroundServer]:
    """A cache of 576 tokens, 504 of them for answers: room for two LONG answers of 200
    tokens (about 40 + 200 each), not three."""
    yield from serve_local(parallel=4, queue=4, n_ctx=576, max_tokens=200)


async def test_conversations_are_answered_together(
    batched: BackgroundServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="gprochat.server.local")
    first_session, first = await open_stream(batched, LONG, max_tokens=48)
    async with first_session, first:
        await first.content.readline()  # the first answer is streaming
        second_session, second = await open_stream(batched, CAPITAL, max_tokens=24)
        async with second_session, second:
            second_answer = await read_answer(second)
        first_answer = await read_answer(first)
    # The second did not wait for the first to end: its short answer left the batch
    # first, while the first one still had most of its 48 tokens to go.
    left = [r.args for r in caplog.records if r.msg == SEQUENCE_LEFT]
    assert [reason for reason, _ in left] == ["stop", "length"], left
    assert left[1][1] == 48
    assert "Paris" in second_answer
    assert first_answer.startswith("Once upon a time")
    sky = [{"role": "user", "content": "Why is the sky blue?"}]
    together = await asyncio.gather(*(read_whole(batched, m) for m in (CAPITAL, sky, CAPITAL, LONG)))
    assert "Paris" in together[0] and "Paris" in together[2]
    assert all(answer.strip() for answer in together)


async def read_whole(server: BackgroundServer, messages: list[dict[str, str]]) -> str:
    session, response = await open_stream(server, messages, max_tokens=24)
    async with session, response:
        return await read_answer(response)


async def test_a_conversation_waits_for_room_in_the_cache_instead_of_failing(
    batched: BackgroundServer,
) -> None:
    streams = []
    try:
        for _ in range(2):  # each reserves its prompt and 200 tokens: the cache is full
            session, response = await open_stream(batched, LONG, max_tokens=200)
            streams.append((session, response))
            await response.content.readline()
        third = asyncio.create_task(read_whole(batched, CAPITAL))
        await asyncio.wait_for(until_queued(batched, 1), 300)  # a guard against a hang
        assert not third.done()
        session, response = streams.pop(0)
        response.close()  # one leaves: its room goes to the one waiting
        await session.close()
        assert "Paris" in await asyncio.wait_for(third, 30)
        assert await queued(batched) == 0
    finally:
        for session, response in streams:
            response.close()
            await session.close()


async def test_a_conversation_longer_than_the_context_is_413(local: BackgroundServer) -> None:
    status, _, raw = await post(local.base_url, signed("word " * 1500))
    assert status == 413
    assert "context holds 896" in error_message(raw)  # 1024, less 128 kept for prompt prefixes


async def test_metrics_and_health_name_the_backend(local: BackgroundServer) -> None:
    async with aiohttp.ClientSession() as session, session.get(local.base_url + "/healthz") as r:
        body = await r.json()
    assert r.status == 200 and body["backend"] == "local" and body["status"] == "ok"
    assert await queued(local) == 0


class GatedLoad(LocalBackend):
    """Loads the real model only once the test opens the gate: the loading window made visible."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.gate = threading.Event()

    def _load(self) -> None:
        self.gate.wait(30)
        super()._load()


# Gemma's template, in short: no system role (it raises), turns as <start_of_turn>ROLE.
NO_SYSTEM_ROLE = (
    "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not "
    "supported') }}{% endif %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n"
    "{{ m['content'] }}<end_of_turn>\n{% endfor %}<start_of_turn>model\n"
)


class NoSystemRoleTemplate(LocalBackend):
    """The real model behind a template that refuses system messages, as Gemma's does."""

    @staticmethod
    def _chat_formatter(llama: Any) -> Any:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        eos = llama.token_eos()
        return Jinja2ChatFormatter(NO_SYSTEM_ROLE, eos_token="", bos_token="", stop_token_ids=[eos])


async def test_a_template_without_system_role_gets_the_system_text_in_the_first_turn(
    make_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    require_local_model()
    caplog.set_level(logging.DEBUG, logger="gprochat.server.local")
    server = make_server(ServerConfig(system_prompt="Answer in one word."),
                         backend=NoSystemRoleTemplate(max_tokens=4))
    status, _, raw = await post(server.base_url, signed("Hi"))
    # Not a 500 from the template's exception, nor an empty answer (its eos_token is "").
    assert status == 200 and raw.strip(), raw
    [prompt] = [r.args[0] for r in caplog.records if r.msg == "local backend prompt: %r"]
    assert prompt.rstrip() == (
        "<start_of_turn>user\nAnswer in one word.\n\nHi<end_of_turn>\n<start_of_turn>model"
    )


async def test_loading_answers_503_until_ready(caplog: pytest.LogCaptureFixture) -> None:
    require_local_model()
    caplog.set_level(logging.INFO, logger="gprochat.server.local")
    backend = GatedLoad(max_tokens=4, temperature=0.0)
    app = create_app(ServerConfig(), backend=backend)
    server = BackgroundServer(app=app).start(wait_for_backend=False)
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(server.base_url + "/healthz") as r:
                assert r.status == 503 and (await r.json())["status"] == "loading"
            status, headers, raw = await post(server.base_url, signed("Hi"))
            assert status == 503 and "Retry-After" in headers
            assert "loading" in error_message(raw)
            backend.gate.set()
            assert await asyncio.to_thread(backend.wait_ready, 60) == "ready"
            async with session.get(server.base_url + "/healthz") as r:
                assert r.status == 200 and (await r.json())["status"] == "ok"
            status, _, raw = await post(server.base_url, signed("Hi"))
            assert status == 200 and raw.strip()
        # One line says what was loaded: the file, its size, how long it took.
        [loaded] = [r.getMessage() for r in caplog.records if "loaded" in r.getMessage()]
        assert re.search(r"SmolLM2-135M-Instruct\.Q4_1\.gguf \(\d+\.\d MB\) in \d+\.\d\d s: "
                         r"1 context\(s\) of \d+ tokens", loaded)
    finally:
        server.stop()


async def test_a_model_that_cannot_load_is_one_clear_failure(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    require_local_model()
    model = default_model_path()
    assert model is not None
    truncated = tmp_path / "truncated.gguf"
    with model.open("rb") as source, truncated.open("wb") as target:
        target.write(source.read(1 << 20))  # a valid header, most of the file missing
    backend = LocalBackend(model_path=str(truncated))
    app = create_app(ServerConfig(), backend=backend)
    server = BackgroundServer(app=app).start(wait_for_backend=False)
    try:
        assert await asyncio.to_thread(backend.wait_ready, 60) != "ready"
        async with aiohttp.ClientSession() as session:
            async with session.get(server.base_url + "/healthz") as r:
                body = await r.json()
            assert r.status == 503 and body["status"] == "unavailable"
            assert "truncated.gguf" in body["backend_status"]
        status, _, raw = await post(server.base_url, signed("Hi"))
        assert status == 503 and "truncated.gguf" in error_message(raw)
    finally:
        server.stop()
    [line] = [r for r in caplog.records if r.name == "gprochat.server.local" and r.levelno >= logging.ERROR]
    assert "could not load the model" in line.getMessage() and line.exc_info is None


def test_serve_exits_1_with_one_line_when_the_model_does_not_load(tmp_path: Path) -> None:
    require_local_model()
    model = default_model_path()
    assert model is not None
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(model.read_bytes()[: 1 << 20])
    result = run_cli("serve", "--backend", "local", "--model-path", str(truncated), "--port", "0",
                     "--log-format", "text")
    assert result.returncode == 1
    [line] = [line for line in result.stderr.splitlines() if "could not load the model" in line]
    assert "truncated.gguf" in line and "ERROR" in line
    assert "Traceback" not in result.stderr


def test_model_file_is_checked_before_anything_loads(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        check_model_file(tmp_path / "missing.gguf")
    not_gguf = tmp_path / "model.bin"
    not_gguf.write_bytes(b"PK\x03\x04" + b"\0" * 64)
    with pytest.raises(ValueError, match="is not a GGUF model"):
        check_model_file(not_gguf)
    with pytest.raises(ValueError, match="is not a file"):
        check_model_file(tmp_path)


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda d: d / "missing.gguf", "does not exist"),
        (lambda d: (d / "x.gguf").write_bytes(b"not a model at all, really") and d / "x.gguf",
         "is not a GGUF model"),
    ],
)
def test_serve_with_a_bad_model_file_exits_2(tmp_path: Path, make, expected: str) -> None:
    require_local_model()
    path = make(tmp_path)
    result = run_cli("serve", "--backend", "local", "--model-path", str(path))
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_and_chat_local_default_to_the_real_model() -> None:
    require_local_model()
    # The timeouts guard against a hang; a crowded machine may take minutes.
    with served(env=clean_env(GPROCHAT_BACKEND="auto"), timeout=600) as base_url:
        answer = asyncio.run(GPROChat.create_async("", FRANCE, base_url=base_url))
    assert "Paris" in answer
    result = run_cli("chat", "--local", "--json", "What is the capital of France?",
                     env=clean_env(GPROCHAT_BACKEND="auto"), timeout=600)
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert "Paris" in record["answer"]
    # The log names the model that answered, not the protocol's default name.
    assert record["model"] == "SmolLM2-135M-Instruct.Q4_1"


def test_auto_falls_back_to_echo_and_says_how_to_install(tmp_path: Path) -> None:
    # An interpreter that cannot import llama_cpp: a shadowing module raising ImportError.
    (tmp_path / "llama_cpp.py").write_text("raise ImportError('hidden by the test')\n")
    env = clean_env(GPROCHAT_BACKEND="auto", PYTHONPATH=str(tmp_path))
    result = run_cli("chat", "--local", "Hi", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Echo from the built-in echo backend")
    assert "pip install 'gprochat[local]'" in result.stderr
    # gprochat serve says the same before binding (a taken port ends it right after; the
    # start-up line itself comes only once the port is bound).
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = run_cli("serve", "--port", str(taken.getsockname()[1]), env=env)
    assert "echo backend answers" in result.stderr
    assert "pip install 'gprochat[local]'" in result.stderr
    assert "cannot listen on" in result.stderr and result.returncode == 1


def test_chat_local_takes_the_local_settings_from_the_environment(tmp_path: Path) -> None:
    """As gprochat serve does: GPROCHAT_MAX_TOKENS caps the answer, and a model named by
    GPROCHAT_MODEL_PATH that cannot run is an error, not a quiet echo in its place."""
    require_local_model()
    result = run_cli("chat", "--local", "--json", "What is the capital of France?",
                     env=clean_env(GPROCHAT_BACKEND="auto", GPROCHAT_MAX_TOKENS="2"))
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)["answer"]
    assert answer and "Paris" not in answer and len(answer.split()) <= 2

    missing = tmp_path / "missing.gguf"
    not_gguf = tmp_path / "model.gguf"
    not_gguf.write_text("not a model\n")
    for path, why in ((missing, "does not exist"), (not_gguf, "is not a GGUF model")):
        result = run_cli("chat", "--local", "Hi", env=clean_env(GPROCHAT_BACKEND="auto",
                                                                GPROCHAT_MODEL_PATH=str(path)))
        assert result.returncode == 2
        assert result.stdout == ""
        assert result.stderr.startswith(f"Error: local backend: model file '{path}' {why}")
        assert "Traceback" not in result.stderr


async def test_an_answer_cut_by_the_token_limit_is_logged(
    local: BackgroundServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The protocol has no way to say it, so the server's log does (and only then)."""
    caplog.set_level(logging.INFO, logger="gprochat.server.local")
    cut = "local backend: an answer reached its token limit (%d) and was cut; " \
          "a request's max_tokens, up to --max-tokens, sets it"
    session, response = await open_stream(local, LONG, max_tokens=16)
    async with session, response:
        assert (await read_answer(response)).strip()
    assert [r.args for r in caplog.records if r.msg == cut] == [(16,)]
    caplog.clear()
    answer = await GPROChat.create_async("", FRANCE, base_url=local.base_url)
    assert "Paris" in answer
    assert [r for r in caplog.records if r.msg == cut] == []


# -- the binding --------------------------------------------------------------------


def binding_as_of(version: str) -> Any:
    """The installed ``llama_cpp`` module as an older release described it: its version
    string, and what that release lacked (from the releases' own llama_cpp.py)."""
    import ctypes
    import types

    import llama_cpp

    old = types.SimpleNamespace(**vars(llama_cpp))
    old.__version__ = version
    numbers = tuple(int(part) for part in version.split("."))
    if numbers < (0, 3, 35):  # llama_sampler_init_penalties(penalty_last_n, repeat, freq, present)
        old.llama_sampler_init_penalties = types.SimpleNamespace(
            argtypes=[ctypes.c_int32, ctypes.c_float, ctypes.c_float, ctypes.c_float])
    if numbers < (0, 3, 15):  # no kv_unified in llama_context_params
        fields = [f for f in llama_cpp.llama_context_params._fields_ if f[0] != "kv_unified"]
        old.llama_context_params = type("llama_context_params", (ctypes.Structure,), {"_fields_": fields})
    if numbers < (0, 3, 10):  # the KV cache was llama_kv_self_*, no llama_get_memory
        del old.llama_get_memory, old.llama_memory_seq_cp
    return old


def test_the_installed_binding_has_what_the_engine_needs() -> None:
    require_local_model()
    import llama_cpp

    from gprochat.server.backends._llama import check_binding

    check_binding(llama_cpp)  # no error


@pytest.mark.parametrize(
    ("version", "lacks"),
    [
        ("0.3.34", "it lacks llama_sampler_init_penalties taking n_vocab (from 0.3.35)"),
        ("0.3.14", "it lacks llama_context_params.kv_unified (from 0.3.15); "
                   "llama_sampler_init_penalties taking n_vocab (from 0.3.35)"),
        ("0.3.9", "it lacks llama_get_memory/llama_memory_seq_* (from 0.3.10); "
                  "llama_context_params.kv_unified"),
    ],
)
def test_an_older_binding_is_refused_naming_both_versions(version: str, lacks: str) -> None:
    require_local_model()
    from gprochat.server.backends._llama import BindingError, check_binding

    with pytest.raises(BindingError) as refused:
        check_binding(binding_as_of(version))
    message = str(refused.value)
    assert message.startswith(f"llama-cpp-python {version} is too old for the local backend: "
                              "it needs >= 0.3.35 (")
    assert lacks in message
    assert message.endswith("; pip install -U 'llama-cpp-python>=0.3.35,<0.4'")


def test_a_binding_whose_version_says_new_enough_but_lacks_a_function_is_refused() -> None:
    require_local_model()
    from gprochat.server.backends._llama import BindingError, check_binding

    binding = binding_as_of("0.3.34")
    binding.__version__ = "0.3.36"  # a build whose version and functions disagree
    with pytest.raises(BindingError, match=r"^llama-cpp-python 0\.3\.36 lacks what the local backend "
                                           r"needs: it needs >= 0\.3\.35 \(it lacks llama_sampler_init"):
        check_binding(binding)


# Turns the real binding, in a child process, into what 0.3.34 was: its version and its
# llama_sampler_init_penalties without n_vocab (ctypes would pass the extra argument on).
OLD_BINDING = """\
import ctypes, llama_cpp
llama_cpp.__version__ = "0.3.34"
llama_cpp.llama_sampler_init_penalties.argtypes = [ctypes.c_int32, ctypes.c_float, ctypes.c_float,
                                                   ctypes.c_float]
"""


def test_serve_and_chat_with_an_older_binding_say_which_to_install(tmp_path: Path) -> None:
    require_local_model()
    (tmp_path / "sitecustomize.py").write_text(OLD_BINDING)
    path = os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH")) if p)
    too_old = ("llama-cpp-python 0.3.34 is too old for the local backend: it needs >= 0.3.35 "
               "(it lacks llama_sampler_init_penalties taking n_vocab (from 0.3.35)); "
               "pip install -U 'llama-cpp-python>=0.3.35,<0.4'")
    result = run_cli("serve", "--backend", "local", "--port", "0", env=clean_env(PYTHONPATH=path))
    assert result.returncode == 2, result.stderr
    assert too_old in result.stderr and "Traceback" not in result.stderr
    # The default backend (auto) falls back to echo and says why.
    result = run_cli("chat", "--local", "Hi", env=clean_env(GPROCHAT_BACKEND="auto", PYTHONPATH=path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Echo from the built-in echo backend")
    assert too_old in result.stderr


# -- nothing lost while a model loads ---------------------------------------------------


def test_no_output_of_other_threads_is_lost_while_the_model_loads(
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """Another thread writes numbered lines to stdout and stderr all through a real load;
    every line arrives (llama-cpp-python's verbose=False would point both at /dev/null
    meanwhile), and llama.cpp's own log goes to Python logging, not to stderr."""
    require_local_model()
    caplog.set_level(logging.DEBUG, logger="gprochat.server.local.llama_cpp")
    backend = LocalBackend(parallel=1, n_ctx=256)
    writing, stop = threading.Event(), threading.Event()
    during_load = 0
    written = 0

    def write() -> None:
        nonlocal during_load, written
        while not stop.is_set():
            os.write(1, f"out {written}\n".encode())
            os.write(2, f"err {written}\n".encode())
            if backend.status == "loading" and backend._loader is not None:
                during_load += 1
            written += 1
            writing.set()
            time.sleep(0.0002)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        assert writing.wait(30)
        assert backend.wait_ready(300) == "ready"
        stop.set()
        writer.join()
    finally:
        stop.set()
        asyncio.run(backend.aclose())
    out, err = capfd.readouterr()
    assert during_load > 10, "the writer did not overlap the load"
    assert [line for line in out.splitlines() if line.startswith("out ")] == [
        f"out {n}" for n in range(written)]
    assert [line for line in err.splitlines() if line.startswith("err ")] == [
        f"err {n}" for n in range(written)]
    # llama.cpp described the model it loaded, in records, at debug level.
    llama_lines = [r for r in caplog.records if r.name == "gprochat.server.local.llama_cpp"]
    assert any("llama_model_loader" in r.getMessage() for r in llama_lines)
    assert {r.levelno for r in llama_lines} == {logging.DEBUG}
    assert "llama_model_loader" not in err


def test_serve_loses_no_line_while_the_model_loads() -> None:
    """The start-up line and one access-log line per request made while the model
    loads, in several starts (they went missing in about three of eight)."""
    require_local_model()
    for _ in range(3):
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        process = subprocess.Popen(
            [*GPROCHAT, "serve", "--backend", "local", "--host", "127.0.0.1", "--port", str(port),
             "--log-format", "text"],
            env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        statuses = []
        try:
            while not statuses or statuses[-1] != 200:
                assert process.poll() is None, process.communicate()
                try:
                    with urllib.request.urlopen(base_url + "/healthz", timeout=120) as reply:
                        statuses.append(reply.status)
                except urllib.error.HTTPError as refused:
                    statuses.append(refused.code)
                    refused.close()
                except urllib.error.URLError as error:
                    if not isinstance(error.reason, ConnectionRefusedError):
                        raise
                    # not listening yet: no request, no line
                time.sleep(0.005)
        finally:
            stop_process(process)
        out, err = (stream.decode() for stream in process.communicate())
        logged = out + err
        assert len(re.findall(r"serving on http://127\.0\.0\.1:\d+", logged)) == 1, logged
        access = re.findall(r"GET /healthz (\d{3})", logged)
        assert sorted(access) == sorted(str(status) for status in statuses), (statuses, logged)
        assert "llama_model_loader" not in logged
