"""The batch engine's own logic: stop strings across token pieces, shared prompt prefixes."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from typing import Any

import pytest

from gprochat.server.backends._batch import END, BatchEngine, Job, Sampling
from gprochat.server.backends.base import Conversation

from .test_local import CAPITAL as CAPITAL_MESSAGES
from .test_local import require_local_model

CAPITAL = CAPITAL_MESSAGES[0]["content"]  # see test_local: no near tie before "Paris"


def job(stop: list[str], sink: list[object]) -> Job:
    return Job(seq_id=0, tokens=[1], limit=10, sampling=Sampling(0, 1, 1), stop=stop,
               emit=sink.append, done=lambda reason, generated: None)


def feed(pieces: list[str], stop: list[str]) -> tuple[str, bool]:
    """The text emitted for ``pieces`` arriving one token at a time, and whether it stopped."""
    sink: list[object] = []
    answer = job(stop, sink)
    for piece in pieces:
        answer.held += piece
        if BatchEngine._emit_text(answer):
            return "".join(map(str, sink)), True
    BatchEngine._emit_text(answer, final=True)
    return "".join(map(str, sink)), False


@pytest.mark.parametrize(
    ("pieces", "stop", "expected"),
    [
        (["The capital", " is", " Par", "is."], [" Paris"], ("The capital is", True)),
        (["Hello", " wor", "ld"], ["world!"], ("Hello world", False)),  # a stop's start, then not
        (["a<", "|", "end|>b"], ["<|end|>"], ("a", True)),
        (["Paris"], ["Paris"], ("", True)),
        (["no stop here"], [], ("no stop here", False)),
    ],
)
def test_stop_strings_found_across_pieces(pieces: list[str], stop: list[str], expected: Any) -> None:
    assert feed(pieces, stop) == expected


def test_text_that_may_begin_a_stop_string_waits_for_the_next_piece() -> None:
    sink: list[object] = []
    answer = job(["STOP"], sink)
    answer.held = "go ST"
    assert not BatchEngine._emit_text(answer)
    assert sink == ["go "] and answer.held == "ST"


def test_a_prompt_starts_from_the_cached_beginning_it_shares() -> None:
    backend = loaded(parallel=2, n_ctx=1024, max_tokens=12)
    engine = backend._engines[0]

    async def answer(text: str) -> str:
        return "".join([piece async for piece in backend.stream(Conversation(message=text))])

    async def main() -> tuple[str, str, str]:
        try:
            first = await answer("What is the capital of France?")
            second = await answer("What is the capital of France?")
            other = await answer("Name a colour.")
            return first, second, other
        finally:
            await backend.aclose()

    first, second, other = asyncio.run(main())
    assert "Paris" in first and second == first
    # The second prompt was the first again: all of it but its last token came from the
    # cache; the third shared the system prompt and the template's head.
    assert engine.shared_tokens > engine.prompt_tokens / 3
    assert other.strip()


def test_the_next_turn_of_a_chat_computes_only_its_new_message() -> None:
    from gprochat.server.backends import Turn

    backend = loaded(parallel=2, n_ctx=2048, max_tokens=24)
    engine = backend._engines[0]
    question = "What is the capital of France?"

    async def main() -> tuple[str, int, int]:
        try:
            first = "".join([p async for p in backend.stream(Conversation(message=question))])
            # Kept, but outside the cache: no sequence holds a cell (kept cells would
            # widen every later step's attention).
            assert len(engine._kept) == 1
            memory, llama_cpp = engine._memory, engine._llama_cpp
            sequences = range(llama_cpp.llama_n_seq_max(engine._ctx))
            assert {llama_cpp.llama_memory_seq_pos_max(memory, seq) for seq in sequences} == {-1}
            before = engine.shared_tokens
            follow_up = Conversation(message="And of Italy?",
                                     history=(Turn("user", question), Turn("model", first)))
            prompt = backend._prepare(follow_up)[0]
            second = "".join([p async for p in backend.stream(follow_up)])
            assert second.strip()
            return first, engine.shared_tokens - before, len(prompt)
        finally:
            await backend.aclose()

    first, shared, prompt = asyncio.run(main())
    assert "Paris" in first
    # The first turn's prompt and answer were kept: the second computes little more than
    # "And of Italy?" and its template tokens.
    assert shared >= prompt - 15, (shared, prompt)


def test_prompts_that_arrive_together_share_what_they_have_in_common() -> None:
    backend = loaded(parallel=4, n_ctx=2048, max_tokens=8)
    engine = backend._engines[0]

    async def main() -> list[str]:
        try:
            conversations = [Conversation(message=CAPITAL)] * 3
            return await asyncio.gather(*(collect(backend, c) for c in conversations))
        finally:
            await backend.aclose()

    answers = asyncio.run(main())
    assert all("Paris" in answer for answer in answers)
    # Nothing was kept yet: the second and third copies followed the first and computed
    # only their last prompt token each.
    assert engine.shared_tokens == 2 * (engine.prompt_tokens // 3 - 1)


def test_a_few_tokens_in_common_are_computed_again_not_waited_for_or_copied_back() -> None:
    """Prompts that share only the chat template's head (each system message starts with
    its own nonce) neither wait a step for one another nor copy a kept conversation back
    into the cache for those few tokens."""
    import uuid

    backend = loaded(parallel=4, n_ctx=2048, max_tokens=8)
    engine = backend._engines[0]
    followed, restored = [], []
    step, restore = engine._step, engine._restore

    def watched(active: list[Job]) -> None:
        followed.extend(job.follow is not None for job in active)
        step(active)

    def restoring(cells: Any, job: Job, length: int) -> None:
        restored.append(length)
        restore(cells, job, length)

    engine._step, engine._restore = watched, restoring

    def fresh() -> Conversation:
        return Conversation(message=CAPITAL, system=f"[{uuid.uuid4().hex}] You are a helpful assistant.")

    async def main() -> list[str]:
        try:
            together = await asyncio.gather(*(collect(backend, fresh()) for _ in range(3)))
            assert engine._kept  # kept, but sharing too little with the next to be used
            return [*together, await collect(backend, fresh())]
        finally:
            await backend.aclose()

    answers = asyncio.run(main())
    assert all("Paris" in answer for answer in answers)
    # (A prompt already computed may still lend its few cells: that copies nothing.)
    assert not any(followed) and not restored, restored


def loaded(**options: Any) -> Any:
    """A ``LocalBackend`` with the default model, loaded."""
    require_local_model()
    from gprochat.server.backends import LocalBackend

    backend = LocalBackend(**options)
    assert backend.wait_ready(60) == "ready"
    return backend


async def collect(backend: Any, conversation: Conversation) -> str:
    return "".join([piece async for piece in backend.stream(conversation)])


def test_greedy_answers_are_the_tokens_llama_cpps_own_samplers_choose() -> None:
    """The engine picks greedy tokens itself (``_sample``); llama.cpp's penalties and
    greedy samplers, given the same logits and the same answer so far, agree at every
    token, and the repeat penalty changed some choices (the test reaches that code)."""
    import llama_cpp

    backend = loaded(parallel=4, n_ctx=2048, max_tokens=96, repeat_penalty=1.3)
    engine = backend._engines[0]
    chains: dict[int, Any] = {}
    agreed, penalized = [0], [0]
    ours = engine._sample

    def checked(job: Job, index: int) -> int:
        chosen = ours(job, index)
        if id(job) not in chains:  # what the engine used before: penalties, then greedy
            assert job.sampling.temperature == 0
            chains[id(job)] = engine._sampler(job.sampling)
        theirs = llama_cpp.llama_sampler_sample(chains[id(job)], engine._ctx, index)
        assert chosen == theirs, (chosen, theirs, job.generated)
        agreed[0] += 1
        row = llama_cpp.llama_get_logits_ith(engine._ctx, index)
        if max(range(engine._n_vocab), key=lambda token: row[token]) != chosen:
            penalized[0] += 1
        return chosen

    engine._sample = checked
    prompts = ["Write a long story about a dragon who learns to cook.", "List the numbers from one to fifty.",
               "Repeat the word 'cat' many times.", CAPITAL]

    async def main() -> list[str]:
        try:
            return await asyncio.gather(*(collect(backend, Conversation(message=p)) for p in prompts))
        finally:
            await backend.aclose()

    answers = asyncio.run(main())
    for chain in chains.values():
        llama_cpp.llama_sampler_free(chain)
    # A disagreement fails the engine's step, and with it every answer.
    assert all(answer.strip() for answer in answers)
    assert agreed[0] >= 100 and penalized[0] > 0, (agreed, penalized)


def test_a_request_may_ask_for_fewer_tokens_than_the_server_allows_not_more() -> None:
    from gprochat.server.backends.base import AnswerReport

    backend = loaded(parallel=2, n_ctx=1024, max_tokens=8)

    async def ask(max_tokens: int) -> AnswerReport:
        report = AnswerReport()
        conversation = Conversation(message="Write a long story about a dragon.",
                                    max_tokens=max_tokens, report=report)
        await collect(backend, conversation)
        return report

    async def main() -> tuple[AnswerReport, AnswerReport]:
        try:
            return await ask(500), await ask(3)
        finally:
            await backend.aclose()

    more, fewer = asyncio.run(main())
    # Asking for 500 would reserve 500 tokens of the shared cache: capped at --max-tokens.
    assert more.finish_reason == "length" and more.usage is not None
    assert more.usage["completion_tokens"] == 8
    assert fewer.usage is not None and fewer.usage["completion_tokens"] == 3


def test_a_job_that_is_cancelled_frees_its_place_and_sends_nothing_more() -> None:
    backend = loaded(parallel=1, n_ctx=1024, max_tokens=400)
    engine = backend._engines[0]
    tokens = backend._prepare(Conversation(message="Write a long story about a dragon."))[0]
    received: list[object] = []
    finished = threading.Event()
    ended: list[Any] = []

    def done(reason: Any, generated: int) -> None:
        ended.append((reason, generated))
        finished.set()

    cancel = threading.Event()

    def emit(item: object) -> None:
        received.append(item)
        if len(received) == 3:
            cancel.set()

    engine.submit(Job(seq_id=0, tokens=tokens, limit=400, sampling=Sampling(0, 1, 1.1), stop=[],
                      emit=emit, done=done, cancel=cancel))
    assert finished.wait(30)
    [(reason, generated)] = ended
    assert reason is None and generated <= 4  # stopped within one token of the cancel
    assert END not in received
    asyncio.run(backend.aclose())


def test_a_long_prompt_is_fed_in_pieces_while_other_answers_stream() -> None:
    from gprochat.server.backends._batch import JUST_STARTED, PREFILL_WHILE_STREAMING

    # One thread: on a machine busy with other work, two threads that wait for each
    # other at every layer can slow to a crawl; what is tested here is the order.
    backend = loaded(parallel=2, n_ctx=2048, max_tokens=64, threads=1)
    engine = backend._engines[0]
    story = backend._prepare(Conversation(message="Write a long story about a dragon."))[0]
    long_prompt = backend._prepare(Conversation(message="word " * 600))[0]
    pieces = (len(long_prompt) - 1) // PREFILL_WHILE_STREAMING + 1
    assert pieces >= 3
    events: list[str] = []
    streaming = threading.Event()
    ended = {"story": threading.Event(), "long": threading.Event()}

    def make(name: str, tokens: list[int], limit: int) -> Job:
        def emit(item: object) -> None:
            if item is END or isinstance(item, BaseException):
                events.append(f"{name} ended")
                ended[name].set()
            else:
                events.append(name)
                streaming.set()

        return Job(seq_id=0 if name == "story" else 1, tokens=tokens, limit=limit,
                   sampling=Sampling(0, 1, 1.1), stop=[], emit=emit, done=lambda r, g: None)

    try:
        # The story has 64 tokens to go, the long prompt needs `pieces` steps. It arrives
        # once the story has streamed for a while (not in the same wave: JUST_STARTED).
        first = make("story", story, 64)
        engine.submit(first)
        assert streaming.wait(300)
        deadline = time.monotonic() + 300  # guards against a hang
        while first.generated < JUST_STARTED and time.monotonic() < deadline:
            time.sleep(0.001)
        submitted = len(events)
        engine.submit(make("long", long_prompt, 1))
        # Guards against a hang, not speed tests.
        assert ended["long"].wait(300) and ended["story"].wait(300)
    finally:
        asyncio.run(backend.aclose())
    # The story kept streaming while the long prompt was computed, a piece per step.
    meanwhile = events[submitted: events.index("long ended")].count("story")
    assert meanwhile >= pieces, (pieces, meanwhile)


def watch_feeding(engine: BatchEngine) -> list[int]:
    """A list the engine fills, per step, with the prompt tokens not yet computed before it."""
    feeding: list[int] = []
    step = engine._step

    def watched(active: list[Job]) -> None:
        feeding.append(sum(len(job.tokens) - job.fed for job in active))
        step(active)

    engine._step = watched
    return feeding


@pytest.mark.parametrize("n_batch", [512, None])
def test_a_burst_of_prompts_is_computed_in_as_few_steps_as_the_batch_allows(
        n_batch: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Chats that arrive together: at the default batch size (2048 tokens, llama.cpp
    splitting it into its ubatches) all in the first step; in a batch of 512 tokens,
    once the first have their first token, the rest of the prompts are not fed in
    streaming-sized pieces (their answers are as young)."""
    import uuid

    from gprochat.server.backends._batch import PREFILL_WHILE_STREAMING

    if n_batch is not None:
        monkeypatch.setitem(BatchEngine.__init__.__kwdefaults__, "n_batch", n_batch)
    backend = loaded(parallel=16, n_ctx=4096, max_tokens=4)
    engine = backend._engines[0]
    # 15 prompts of about 62 tokens, each with its own nonce (nothing to share).
    prompts = [backend._prepare(Conversation(
        message="Write a long story about a dragon who learns to cook.",
        system=f"[{uuid.uuid5(uuid.NAMESPACE_URL, str(index)).hex}] You are a helpful assistant."))[0]
        for index in range(15)]
    total = sum(map(len, prompts))
    if n_batch is None:
        assert total < engine.n_batch
    else:
        assert engine.n_batch < total <= 2 * engine.n_batch - 16
        assert total > engine.n_batch + PREFILL_WHILE_STREAMING  # in pieces, a third step
    feeding = watch_feeding(engine)
    ended = threading.Semaphore(0)

    def emit(item: object) -> None:
        if item is END or isinstance(item, BaseException):
            ended.release()

    jobs = [Job(seq_id=index, tokens=tokens, limit=4, sampling=Sampling(0, 1, 1.1), stop=[], emit=emit,
                done=lambda r, g: None) for index, tokens in enumerate(prompts)]
    try:
        with engine._wake:  # all arrive before the engine's next look at its inbox
            for job in jobs:
                engine.submit(job)
        for _ in jobs:
            assert ended.acquire(timeout=300)  # guards against a hang
    finally:
        asyncio.run(backend.aclose())
    assert feeding[0] == total and feeding[1 if n_batch is None else 2] == 0, feeding[:4]


def test_a_storm_of_abandoned_requests_gives_every_place_back() -> None:
    """Clients leaving while queued, while their prompt is computed, or mid-answer: once
    it is over, the whole cache and every sequence are free again and nobody waits."""
    from gprochat.errors import BackendError

    backend = loaded(parallel=4, queue=12, n_ctx=2048, max_tokens=24)
    capacity = backend._capacity
    engine = backend._engines[0]
    questions = [CAPITAL, "Why is the sky blue?", "Name a colour.",
                 "Write a long story about a dragon."]

    async def client(index: int) -> str:
        conversation = Conversation(message=questions[index % len(questions)])
        pieces = []
        try:
            async for piece in backend.stream(conversation):
                pieces.append(piece)
                if index % 3 == 0:  # leaves after its first text
                    break
        except BackendError as exc:  # the queue was full: a clear 503
            assert exc.status == 503
            return "refused"
        return "".join(pieces)

    async def main() -> list[Any]:
        tasks = [asyncio.ensure_future(client(index)) for index in range(24)]
        await asyncio.sleep(0.3)
        for task in tasks[1::4]:  # some leave while queued or while being computed
            task.cancel()
        # A place never given back would leave the queued ones waiting forever.
        # A guard against a hang, not a speed test: a crowded machine may take minutes.
        results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 900)
        for _ in range(6000):  # the engine hands places back from its own thread
            if capacity.queued == 0 and capacity._free_cells[engine] == engine.room:
                break
            await asyncio.sleep(0.05)
        return results

    try:
        results = asyncio.run(main())
        assert capacity.queued == 0
        assert capacity._free_cells[engine] == engine.room
        assert sorted(capacity._free_ids[engine]) == [0, 1, 2, 3]
        answered = [r for r in results if isinstance(r, str) and r not in ("", "refused")]
        assert answered, results
        # And the backend still answers.
        assert "Paris" in asyncio.run(collect(backend, Conversation(message=questions[0])))
    finally:
        asyncio.run(backend.aclose())


class StepClock:
    """The tuner's clock, moved by the steps it is told about."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def run_steps(tuner: Any, clock: StepClock, seconds_per_step: dict[int, float], steps: int) -> list[int]:
    """``steps`` generation steps of one token each; the threads each one ran with."""
    chosen = []
    for _ in range(steps):
        threads = tuner.choose(1, generating_only=True)
        clock.now += seconds_per_step[threads]
        tuner.took(seconds_per_step[threads])
        chosen.append(threads)
    return chosen


def test_the_engine_leaves_two_threads_for_one_when_one_is_faster_and_comes_back() -> None:
    from gprochat.server.backends._batch import ThreadTuner

    clock = StepClock()
    tuner = ThreadTuner(2, clock)
    # Idle: two threads are faster; probes of one thread come and go.
    idle = run_steps(tuner, clock, {2: 0.010, 1: 0.016}, 500)
    assert tuner.threads == 2 and idle.count(1) <= 2 * 500 * 0.010 / tuner.INTERVAL + 2
    # Busy beside other processes: two threads crawl; the engine moves to one thread
    # within a probe interval, and probes two again ever more rarely.
    busy = run_steps(tuner, clock, {2: 0.300, 1: 0.030}, 2000)
    assert tuner.threads == 1
    assert busy.index(1) <= tuner.INTERVAL / 0.300 + 2
    slow_steps = busy[busy.index(1):].count(2)
    assert slow_steps * 0.300 < 0.1 * 2000 * 0.030, slow_steps  # under 10% of the time
    # Idle again: back to two threads within the longest probe interval.
    again = run_steps(tuner, clock, {2: 0.010, 1: 0.016}, 3000)
    assert tuner.threads == 2
    assert again.index(2) * 0.016 <= tuner.MAX_INTERVAL + 1


def test_on_a_quiet_machine_probes_of_one_thread_grow_rare() -> None:
    from gprochat.server.backends._batch import ThreadTuner

    clock = StepClock()
    tuner = ThreadTuner(2, clock)
    # 16 answers at once: two threads decode a step in 155 ms, one in 210 ms. Probing
    # every second cost about a tenth of the speed; backing off, it costs a few percent.
    seconds = {2: 0.155, 1: 0.210}
    chosen = run_steps(tuner, clock, seconds, 1000)
    assert tuner.threads == 2
    lost = chosen.count(1) * (seconds[1] - seconds[2])
    assert lost < 0.02 * clock.now, (chosen.count(1), clock.now)


def test_steps_that_turn_slow_call_for_a_probe_at_once() -> None:
    from gprochat.server.backends._batch import ThreadTuner

    clock = StepClock()
    tuner = ThreadTuner(2, clock)
    run_steps(tuner, clock, {2: 0.010, 1: 0.016}, 20_000)  # quiet for 200 s: probes are rare
    assert tuner.threads == 2
    # Other work starts: two threads crawl. The next two slow steps call for a probe,
    # whatever the interval had grown to, and the probe moves to one thread.
    busy = run_steps(tuner, clock, {2: 0.300, 1: 0.030}, 10)
    assert busy[:2] == [2, 2] and busy[2:] == [1] * 8, busy
    assert tuner.threads == 1


def test_a_machine_that_is_a_little_slower_for_good_is_probed_once_not_at_every_step() -> None:
    from gprochat.server.backends._batch import ThreadTuner

    clock = StepClock()
    tuner = ThreadTuner(2, clock)
    run_steps(tuner, clock, {2: 0.010, 1: 0.016}, 5000)
    # Everything 1.6 times slower (another process on the memory bus): two threads are
    # still faster. One probe says so; the slower steps are the new measure.
    slower = run_steps(tuner, clock, {2: 0.016, 1: 0.026}, 2000)
    assert tuner.threads == 2
    assert slower.count(1) <= 2 * 3, slower.count(1)


def test_the_tuner_compares_only_steps_of_the_same_size() -> None:
    from gprochat.server.backends._batch import ThreadTuner

    clock = StepClock()
    tuner = ThreadTuner(2, clock)
    for size in range(1, 400):  # every step carries another number of answers
        threads = tuner.choose(size, generating_only=True)
        took = 0.001 * size if threads == 2 else 0.0001  # one thread on a smaller step looks fast
        clock.now += took
        tuner.took(took)
    assert tuner.threads == 2


def test_a_probe_open_when_the_answers_end_does_not_compute_the_next_prompts() -> None:
    from gprochat.server.backends._batch import ThreadTuner

    clock = StepClock()
    tuner = ThreadTuner(2, clock)
    seconds = {2: 0.155, 1: 0.210}  # a step of 16 answers
    # When a probe is due, the next step is its first of one thread, and the answers
    # end there (they reached their last token), the probe open.
    chosen = run_steps(tuner, clock, seconds, 2)
    clock.now += tuner.INTERVAL
    chosen += run_steps(tuner, clock, seconds, 1)
    assert chosen == [2, 2, 1], chosen
    # The next 16 chats arrive together: their prompts, about 1,000 tokens, are one step.
    # It has nothing to compare with the probe's: it runs at the threads chosen (two),
    # not at the probe's one, which would take twice as long.
    assert tuner.choose(1000, generating_only=False) == 2
    tuner.took(3.5)
    assert tuner.threads == 2
    # The answers' steps that follow are measured again before the next probe.
    assert run_steps(tuner, clock, seconds, 2) == [2, 2]


def test_a_real_engine_answers_while_it_tunes_its_threads() -> None:
    backend = loaded(parallel=2, n_ctx=1024, max_tokens=48, threads=2)
    engine = backend._engines[0]
    engine.tuner.INTERVAL = 0.0  # probe at every chance

    async def main() -> list[str]:
        try:
            return await asyncio.gather(*(collect(backend, Conversation(message=CAPITAL)) for _ in range(2)))
        finally:
            await backend.aclose()

    answers = asyncio.run(main())
    assert all("Paris" in answer for answer in answers)


def test_on_a_crowded_machine_probing_more_threads_costs_little_however_slow_it_is() -> None:
    from gprochat.server.backends._batch import ThreadTuner

    clock = StepClock()
    tuner = ThreadTuner(2, clock)
    seconds = {2: 15.0, 1: 0.7}  # a step of two threads takes seconds when every core is contended
    chosen = run_steps(tuner, clock, seconds, 3000)
    assert tuner.threads == 1
    slow = sum(seconds[2] for threads in chosen[10:] if threads == 2)
    assert slow < 0.1 * clock.now, (slow, clock.now)


def _held_prepares(backend: Any, engine: Any) -> threading.Event:
    """Let the first prompt reach the engine, then the others: every ``_prepare`` but the
    first waits until the engine has been handed a job (so without the gathering, the
    engine would start that job alone)."""
    first_in = threading.Event()
    prepare, submit = backend._prepare, engine.submit
    calls = itertools.count()

    def held_prepare(conversation: Conversation) -> Any:
        if next(calls):
            assert first_in.wait(120)
        return prepare(conversation)

    def submitted(job: Job, arrived: Any = None) -> None:
        submit(job, arrived)
        first_in.set()

    backend._prepare, engine.submit = held_prepare, submitted
    return first_in


def test_chats_that_reach_the_backend_together_start_in_one_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """An idle engine waits for the prompts still being prepared beside the first (up to
    GATHER, made long here: the wait must end because they arrived, not by the clock)."""
    from gprochat.server.backends import _batch

    monkeypatch.setattr(_batch, "GATHER", 600.0)
    backend = loaded(parallel=4, n_ctx=2048, max_tokens=2)
    engine = backend._engines[0]
    chats = [Conversation(message=f"Question {index}: what is {index} plus {index}?") for index in range(4)]
    total = sum(len(backend._prepare(chat)[0]) for chat in chats)
    _held_prepares(backend, engine)
    feeding = watch_feeding(engine)

    async def main() -> list[str]:
        try:
            return await asyncio.wait_for(asyncio.gather(*(collect(backend, chat) for chat in chats)), 120)
        finally:
            await backend.aclose()

    answers = asyncio.run(main())
    assert all(answers)
    assert feeding[0] == total, feeding[:3]  # all four prompts in the first step


def test_a_chat_refused_before_its_engine_holds_up_no_other(monkeypatch: pytest.MonkeyPatch) -> None:
    """A prompt that fails while being prepared (too long for the context) stops counting
    as coming, and the engine waiting for it starts the others at once."""
    from gprochat.errors import BackendError
    from gprochat.server.backends import _batch

    monkeypatch.setattr(_batch, "GATHER", 600.0)
    backend = loaded(parallel=2, n_ctx=512, max_tokens=2)
    _held_prepares(backend, backend._engines[0])
    too_long = Conversation(message="word " * 2_000)

    async def main() -> tuple[str, BaseException]:
        try:
            answer, refused = await asyncio.wait_for(asyncio.gather(
                collect(backend, Conversation(message=CAPITAL)), collect(backend, too_long),
                return_exceptions=True), 120)
            assert isinstance(answer, str) and isinstance(refused, BaseException), (answer, refused)
            return answer, refused
        finally:
            await backend.aclose()

    answer, refused = asyncio.run(main())
    assert answer
    assert isinstance(refused, BackendError) and refused.status == 413, refused
    assert backend._coming == 0
