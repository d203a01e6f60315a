"""Many conversations answered at once by one llama.cpp context (continuous batching).

One ``BatchEngine`` owns a llama.cpp context whose KV cache holds several sequences,
and one thread that decodes them together: every step puts the next token of each
answer being generated, and as much of the waiting prompts as fits, into one batch,
decodes it, and samples one token for each sequence that produced logits. A new
conversation therefore starts within a step or two instead of waiting for the
answers ahead of it to finish, and no answer is interrupted to make room.

On a CPU a tiny model is compute-bound, so a batch of N tokens costs about N times one
token: batching shares the machine among the conversations rather than making it
faster. On bigger models (memory-bound), a batch costs little more than one token.

Prompts that begin alike (the same system prompt, the earlier turns of a conversation)
share the cache cells of their common beginning. The last few finished conversations,
prompt and answer, are kept (``KEPT`` of them, as many tokens as an eighth of the cache,
the least recently used leaving first), so the next turn of a chat computes only its new
message. They are kept as a copy of their cells in memory, outside the cache, as
llama-server keeps its idle slots: cells left in the cache would widen the range every
step's attention runs over (the cache's highest used cell), for every answer. A new
sequence starts from the longest beginning it has in common with a kept conversation
(copied back into the cache) or an answer being generated; when a prompt that arrived
with it has more in common but is not computed yet, it waits for that one and shares it.
Copying back and waiting are done only for a beginning worth it (``WORTH_SHARING``): the
chat template's first few tokens are computed again.

A conversation with images (``Job.media``, prepared by ``_mtmd``) is read differently:
when it arrives, the engine decodes its whole prompt, text and images' embeddings, into
its sequence at once, through llama.cpp's multimodal helper, and samples its first token;
it then generates in the batch like any other. Meanwhile the other answers wait (the
projector's encoding of an image is one long computation that cannot be cut in pieces).
It neither shares nor leaves cells for others: its cells hold images, not tokens.

Which sequence a conversation uses and how much of the cache it may fill are decided
before it reaches the engine (``local.Capacity``); the engine assumes it fits.
"""

from __future__ import annotations

import codecs
import contextlib
import ctypes
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

from gprochat.errors import BackendError

__all__ = ["END", "BatchEngine", "Job", "Sampling", "ThreadTuner"]

logger = logging.getLogger("gprochat.server.local")

END = object()
"""Sent after the last text of a finished answer."""

_TOP_K = 40  # llama-cpp-python's create_completion defaults, so answers match its own
_MIN_P = 0.05
_PENALTY_LAST_N = 64

KEPT = 8
"""Finished conversations kept in the cache for the next ones to start from."""

WORTH_SHARING = 32
"""Prompt tokens a shared beginning must have (or half the prompt, when that is fewer)
to be taken from a kept conversation or waited for: a kept conversation is copied back
whole before it is cut to the shared part, into cells that widen every step's attention
until it leaves, and a prompt that waits for another loses a step."""


class ThreadTuner:
    """Chooses, step by step, between the context's threads and one thread.

    llama.cpp's threads wait for each other at a barrier after every operation of the
    model (hundreds per token), spinning rather than sleeping. Beside other busy
    processes, a thread the kernel has paused keeps the others spinning for a whole
    time slice at each barrier, and several threads end far slower than one (measured
    in docs/benchmarks.md, "B6 on a busy machine"); on an idle machine they are faster.
    So the engine measures: now and then it decodes ``PROBE`` steps with the other
    choice, compares their times with the steps just before (the same answers, one
    token each: steps of the same size), and keeps the faster. Any other step (a prompt,
    answers that came or went) ends a probe without a verdict before it runs, so the
    next chats' prompts are never computed at the probe's count.

    A probe is a few slow steps when it loses, so a probe that loses waits twice as
    long before the next one in the same direction (from ``INTERVAL`` up to
    ``MAX_INTERVAL``, and at least ``COST`` times the probe's own time). To leave many
    threads as soon as the machine gets busy all the same, steps that turn
    ``SLOWDOWN`` times slower than the fastest of their size since the last probe call
    for a probe towards one thread at once.
    """

    AUTO = True  # False: never probes, the threads stay as given (benchmarks compare with that)
    PROBE = 2
    INTERVAL = 1.0
    MAX_INTERVAL = 32.0
    MARGIN = 0.9  # the other choice must be 10% faster to be taken
    COST = 20
    SLOWDOWN = 2.0

    def __init__(self, most: int, clock: Callable[[], float]) -> None:
        self.most = most
        self.threads = most
        self._clock = clock
        self._next_probe = clock() + self.INTERVAL
        # Before the next probe towards more threads (True) or fewer (False).
        self._interval = {True: self.INTERVAL, False: self.INTERVAL}
        self._recent: deque[tuple[int, float]] = deque(maxlen=self.PROBE)  # (step size, seconds)
        self._fastest: dict[int, float] = {}  # step size -> seconds, at these threads since the last probe
        self._probe: list[float] = []
        self._probing = False
        self._size = 0
        # What it chose, for the debug log (``report``): steps and seconds per thread count.
        self.steps: dict[int, int] = {}
        self.seconds: dict[int, float] = {}
        self.probes = 0
        self._chosen = most

    def report(self) -> str:
        """The steps decoded at each thread count since the last report, and the probes."""
        text = ", ".join(f"{self.steps[n]} step(s) in {self.seconds[n]:.2f} s at {n} thread(s)"
                         for n in sorted(self.steps, reverse=True))
        text += f"; {self.probes} probe(s), now {self.threads} thread(s)"
        self.steps, self.seconds, self.probes = {}, {}, 0
        return text

    def choose(self, size: int, generating_only: bool) -> int:
        """The threads for the next step, of ``size`` tokens (``generating_only``: one
        token of each answer, no prompt)."""
        self._chosen = self._choose(size, generating_only)
        self.steps[self._chosen] = self.steps.get(self._chosen, 0) + 1
        return self._chosen

    def _choose(self, size: int, generating_only: bool) -> int:
        self._size = size if generating_only else 0
        if self.most == 1 or not self.AUTO:
            return self.threads
        # Answers' steps of the size the last ones had: what a probe compares.
        like_before = bool(self._size) and all(known == self._size for known, _ in self._recent)
        if self._probing:
            if like_before:
                return self._other()
            # A prompt, or a batch of another size (answers came or went, or the batch
            # emptied and the next chats arrived): the probe has nothing to compare this
            # step with, and a prompt at the other count may be seconds lost. No verdict.
            self._end_probe(None)
        elif like_before and len(self._recent) == self.PROBE and self._clock() >= self._next_probe:
            self._probing = True
            self.probes += 1
            return self._other()
        return self.threads

    def _other(self) -> int:
        return 1 if self.threads == self.most else self.most

    def took(self, seconds: float) -> None:
        """How long the step ``choose`` was asked for took."""
        self.seconds[self._chosen] = self.seconds.get(self._chosen, 0.0) + seconds
        if not self._probing:
            if self._size:
                self._recent.append((self._size, seconds))
                self._watch(seconds)
            else:
                self._recent.clear()
            return
        self._probe.append(seconds)
        if len(self._probe) == self.PROBE:
            self._end_probe(min(self._probe) < min(t for _, t in self._recent) * self.MARGIN)

    def _watch(self, seconds: float) -> None:
        """Call for a probe towards one thread now when the last steps, of one size, all
        took ``SLOWDOWN`` times longer than the fastest of that size."""
        fastest = self._fastest.get(self._size)
        if fastest is None or seconds < fastest:
            self._fastest[self._size] = seconds
            return
        if (self.threads > 1 and len(self._recent) == self.PROBE
                and all(took > fastest * self.SLOWDOWN for _, took in self._recent)):
            self._next_probe = min(self._next_probe, self._clock())

    def _end_probe(self, faster: Optional[bool]) -> None:
        towards_more = self._other() > self.threads
        if faster:
            self.threads = self._other()
            self._interval = {True: self.INTERVAL, False: self.INTERVAL}
            logger.debug("local backend: a context now decodes with %d thread(s), measured faster",
                         self.threads)
        elif faster is not None:
            # Twice as long each time, and never less than COST times what the probe took,
            # so on a crowded machine, where a slow step may take seconds, and on a quiet
            # one, where one thread is always slower, probing costs little.
            self._interval[towards_more] = max(min(self._interval[towards_more] * 2, self.MAX_INTERVAL),
                                               self.COST * sum(self._probe))
        self._probe = []
        self._probing = False
        self._recent.clear()
        self._fastest.clear()  # the machine may have changed: learn again
        self._next_probe = self._clock() + self._interval[self._other() > self.threads]


PREFILL_WHILE_STREAMING = 256
"""Prompt tokens one step may compute while answers are streaming: a long prompt is fed
in pieces of this size, so the others' next tokens wait for one piece, not for all of it."""

JUST_STARTED = 4
"""Answers with fewer tokens than this have only just started (in the same wave as the
prompts still waiting): while every answer in the batch is that young, a step computes
as much of the waiting prompts as ``n_batch`` allows, so the last of a burst of chats
gets its first token sooner (the first ones' next tokens wait a step longer)."""


GATHER = 0.02
"""How long an idle engine, given a prompt, waits at most for prompts that are being
prepared at the same moment (rendered and tokenized in worker threads) so that they start
in the same step. A burst of chats reaches the engine over a few milliseconds, and each
decode has a fixed cost (about 50 ms for a prompt step of the default model on two
cores): four chats that start in one step instead of two get their first tokens a fifth
sooner. A prompt that arrives alone waits for nothing (no other is being prepared)."""


@dataclass(frozen=True)
class Sampling:
    """How the next token is chosen: greedy at temperature 0, else top-k/top-p/min-p."""

    temperature: float
    top_p: float
    repeat_penalty: float
    seed: Optional[int] = None


@dataclass(eq=False)
class Job:
    """One answer: its prompt tokens in, its text out through ``emit``.

    ``emit`` is called from the engine's thread with each piece of text, then ``END``
    or a ``BackendError``; ``done(finish_reason, generated)`` once the sequence has left
    the cache ("stop", "length", or None when cancelled or failed). Setting ``cancel``
    stops the answer before its next token.
    """

    seq_id: int
    tokens: Sequence[int]
    limit: int
    sampling: Sampling
    stop: Sequence[str]
    emit: Callable[[object], None]
    done: Callable[[Optional[str], int], None]
    cancel: threading.Event = field(default_factory=threading.Event)
    # A prompt with images (an ``_mtmd.MediaPrompt``, then ``tokens`` is empty); the engine
    # closes it when the job leaves.
    media: Any = None
    # The engine's bookkeeping.
    fed: int = 0  # prompt tokens decoded so far
    logits_at: int = -1  # this step's batch index of the logits to sample from, or -1
    held: str = ""  # text that may be the start of a stop string
    # The answer's tokens; the last one is decoded in the next step.
    output: list[int] = field(default_factory=list)
    cached: int = 0  # positions of this sequence in the KV cache
    follow: Optional[tuple[Job, int]] = None  # waiting to share this job's first n tokens
    finish_reason: Optional[str] = None  # set when the answer has ended
    sampler: Any = None
    decoder: Any = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace"))

    @property
    def prefilling(self) -> bool:
        return self.fed < len(self.tokens)

    @property
    def generated(self) -> int:
        return len(self.output)


class BatchEngine:
    """A llama.cpp context for up to ``parallel`` sequences sharing ``n_ctx`` KV cells, of
    which ``room`` are for answers and the rest keep finished conversations.

    ``model`` is a loaded ``_llama.Model`` (its weights and vocabulary are shared by
    every engine made from it); ``n_batch`` bounds the tokens decoded in one step, so a
    long prompt is fed in pieces while the other answers keep streaming. llama.cpp
    computes a step in ubatches of at most 512 tokens (its compute buffers are sized for
    those); 2048, as llama-server's default, lets a burst of new chats start in one step.
    """

    def __init__(self, model: Any, *, n_ctx: int, parallel: int, threads: int, n_batch: int = 2048,
                 name: str = "gprochat-local", coming: Callable[[], int] = lambda: 0) -> None:
        from ._llama import import_binding

        llama_cpp = import_binding()
        self._llama_cpp = llama_cpp
        self._model = model  # keeps the weights alive while the context uses them
        self.n_batch = max(n_batch, parallel)
        # A kept conversation is copied back into the cache whole, then cut to what the new
        # prompt shares: room for that stays free (it holds no answer).
        self.kept_cells = n_ctx // 8
        self.room = n_ctx - self.kept_cells
        self._kept: list[tuple[Any, list[int]]] = []  # (its cells' copy, its tokens), most recent last
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = self.n_batch
        params.n_ubatch = self.n_ubatch = min(self.n_batch, 512)
        params.n_seq_max = parallel
        params.kv_unified = True  # one pool of cells: a sequence may use all of them
        params.n_threads = threads
        params.n_threads_batch = threads
        ctx = llama_cpp.llama_init_from_model(model.model, params)
        if not ctx:
            raise RuntimeError(f"llama.cpp could not create a context of {n_ctx} tokens "
                               f"for {parallel} sequence(s) (out of memory?)")
        self._ctx = ctx
        self.tuner = ThreadTuner(threads, time.perf_counter)
        self._threads_now = threads
        self._memory = llama_cpp.llama_get_memory(ctx)
        self._vocab = llama_cpp.llama_model_get_vocab(model.model)
        self._n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
        import numpy  # the local extra's (llama-cpp-python depends on it too)

        self._numpy = numpy
        self._logits_row = ctypes.c_float * self._n_vocab
        self._batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        self._piece = ctypes.create_string_buffer(256)
        self.prompt_tokens = 0  # prompt tokens of the answers started: computed or shared
        self.shared_tokens = 0  # of those, the ones taken from the cache instead of computed
        self._inbox: deque[Job] = deque()
        self._wake = threading.Condition()
        # How many prompts are being prepared for submit() right now (see GATHER).
        self._coming = coming
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, job: Job, arrived: Optional[Callable[[], None]] = None) -> None:
        """Hand ``job`` to the engine's thread (from any thread). ``arrived`` is called
        under the engine's lock as the job goes in: there the caller stops counting it
        as coming, so the engine never sees it neither coming nor in the inbox."""
        with self._wake:
            if self._closed:
                raise BackendError("The server is shutting down", status=503)
            if arrived is not None:
                arrived()
            self._inbox.append(job)
            self._wake.notify()

    def nudge(self) -> None:
        """Wake the engine's thread to look again at the prompts coming (one was dropped)."""
        with self._wake:
            self._wake.notify()

    def close(self, timeout: float = 10.0) -> None:
        """Fail what is running, stop the thread and free the context (blocks up to one step)."""
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join(timeout)
        if self._thread.is_alive():  # stuck in a decode: leave the memory to the process
            logger.warning("local backend: a generation thread did not stop within %.0f s", timeout)
            return
        self._llama_cpp.llama_batch_free(self._batch)
        self._llama_cpp.llama_free(self._ctx)

    # -- the engine's thread ------------------------------------------------------

    def _run(self) -> None:
        active: list[Job] = []
        busy_since = stepping = 0.0  # for the debug log: the batch's wall time, its steps' time
        while True:
            with self._wake:
                while not self._inbox and not active and not self._closed:
                    self._wake.wait()
                if not active:
                    self._gather()
                if self._closed:
                    break
                arrived = list(self._inbox)
                self._inbox.clear()
            if not active:
                busy_since, stepping = time.perf_counter(), 0.0
            try:
                for job in arrived:
                    active.append(job)
                    job.sampler = self._sampler(job.sampling) if job.sampling.temperature else None
                    if job.media is not None:
                        self._read_media(job)
                    else:
                        self._start_from_shared_prefix(job, active[:-1])
                for job in [job for job in active if job.cancel.is_set() or job.finish_reason]:
                    active.remove(job)
                    self._retire(job, None if job.cancel.is_set() else job.finish_reason)
                if active:
                    began = time.perf_counter()
                    self._step(active)
                    stepping += time.perf_counter() - began
                for job in [job for job in active if job.finish_reason]:
                    active.remove(job)
                    self._retire(job, job.finish_reason)
                if not active and logger.isEnabledFor(logging.DEBUG):
                    logger.debug("local backend: the batch is empty; since it was last: %.2f s, "
                                 "%.2f s in steps: %s", time.perf_counter() - busy_since, stepping,
                                 self.tuner.report())
            except Exception as exc:  # llama.cpp failed: every answer in the batch is lost
                logger.exception("local backend: generation failed")
                error = exc if isinstance(exc, BackendError) else BackendError(
                    f"The local model failed: {exc}", status=500)
                for job in active:
                    job.emit(error)
                    with contextlib.suppress(Exception):
                        self._retire(job, None)
                active.clear()
        stopping = BackendError("The server is shutting down", status=503)
        for job in [*active, *self._inbox]:
            job.emit(stopping)
            self._retire(job, None)

    def _gather(self) -> None:
        """Idle with a prompt to start: wait (up to ``GATHER``, holding the lock's
        condition) while other prompts are still being prepared and the step has room."""
        self._wake.wait_for(lambda: self._closed or self._coming() <= 0
                            or sum(len(job.tokens) for job in self._inbox) >= self.n_batch, GATHER)

    def _read_media(self, job: Job) -> None:
        """Decode a prompt with images into the job's sequence and take its first token.
        Its failure is the job's alone: it ends with the error, the others go on."""
        if job.cancel.is_set():
            return
        try:
            job.cached = job.media.evaluate(self._ctx, job.seq_id, self.n_ubatch)
            self.prompt_tokens += job.media.cells
        except Exception as exc:
            logger.warning("local backend: a prompt with images could not be read: %s", exc)
            job.emit(exc if isinstance(exc, BackendError) else BackendError(
                f"The local model could not read the images: {exc}", status=500))
            job.cancel.set()  # retired, without END, before the next step
            return
        token = self._sample(job, -1)
        self._advance(job, token)

    def _step(self, active: list[Job]) -> None:
        """One decode: each answer's last token, then waiting prompt tokens, oldest first."""
        batch = self._batch
        n = 0

        def add(token: int, position: int, seq_id: int, logits: bool) -> None:
            nonlocal n
            batch.token[n] = token
            batch.pos[n] = position
            batch.n_seq_id[n] = 1
            batch.seq_id[n][0] = seq_id
            batch.logits[n] = logits
            n += 1

        for job in active:
            job.logits_at = -1
            if job.follow is not None:
                leader, lead = job.follow
                if leader not in active:  # it left before computing what we share
                    job.follow = None
                elif leader.fed >= min(lead, len(job.tokens) - 1):
                    job.follow = None
                    self._share(leader.seq_id, job, lead)
            if not job.prefilling:
                job.logits_at = n
                add(job.output[-1], job.cached, job.seq_id, True)
                job.cached += 1
        generating = n
        streaming = n > 0 and any(job.generated >= JUST_STARTED for job in active if not job.prefilling)
        budget = min(self.n_batch, n + PREFILL_WHILE_STREAMING) if streaming else self.n_batch
        for job in active:
            if job.prefilling and job.follow is None and n < budget:
                take = min(len(job.tokens) - job.fed, budget - n)
                for position in range(job.fed, job.fed + take):
                    last = position == len(job.tokens) - 1
                    if last:
                        job.logits_at = n
                    add(job.tokens[position], position, job.seq_id, last)
                job.fed = job.cached = job.fed + take
        batch.n_tokens = n
        tuner = self.tuner
        threads = tuner.choose(n, generating_only=n == generating)
        if threads != self._threads_now:
            self._llama_cpp.llama_set_n_threads(self._ctx, threads, threads)
            self._threads_now = threads
        started = time.perf_counter()
        status = self._llama_cpp.llama_decode(self._ctx, batch)
        tuner.took(time.perf_counter() - started)
        if status != 0:
            raise BackendError(f"The local model could not decode (llama_decode returned {status}); "
                               "retry shortly", status=503)
        for job in active:
            if job.logits_at >= 0:
                token = self._sample(job, job.logits_at)
                self._advance(job, token)

    def _advance(self, job: Job, token: int) -> None:
        """Take ``token`` as the answer's next and emit the text it completes; end the
        answer at an end-of-generation token, a stop string or the token limit."""
        llama_cpp = self._llama_cpp
        if llama_cpp.llama_vocab_is_eog(self._vocab, token):
            self._end(job, "stop")
            return
        job.output.append(token)
        job.held += job.decoder.decode(self._token_bytes(token))
        if self._emit_text(job):
            self._end(job, "stop", flush=False)
        elif job.generated >= job.limit:
            self._end(job, "length")

    @staticmethod
    def _emit_text(job: Job, final: bool = False) -> bool:
        """Send what cannot start a stop string; True when a stop string was reached."""
        text = job.held
        for stop in job.stop:
            at = text.find(stop)
            if at >= 0:
                if at:
                    job.emit(text[:at])
                job.held = ""
                return True
        keep = 0
        if not final:
            # The longest end of the text that a stop string begins with waits for more.
            for stop in job.stop:
                for length in range(min(len(stop) - 1, len(text)), keep, -1):
                    if text.endswith(stop[:length]):
                        keep = length
                        break
        if len(text) > keep:
            job.emit(text[: len(text) - keep])
        job.held = text[len(text) - keep:]
        return False

    def _end(self, job: Job, reason: str, flush: bool = True) -> None:
        if flush:
            job.held += job.decoder.decode(b"", final=True)
            self._emit_text(job, final=True)
        job.finish_reason = reason

    def _token_bytes(self, token: int) -> bytes:
        """The token's text as bytes; a piece may end inside a UTF-8 character."""
        size = self._llama_cpp.llama_token_to_piece(
            self._vocab, token, self._piece, len(self._piece), 0, False)
        if size < 0:  # the piece is longer than the buffer: -size is its length
            self._piece = ctypes.create_string_buffer(-size)
            return self._token_bytes(token)
        return self._piece.raw[:size]

    def _start_from_shared_prefix(self, job: Job, active: list[Job]) -> None:
        """Let ``job`` share the cells of the longest beginning it has in common with a
        kept conversation or an answer in the cache; it then computes only the rest.
        When a prompt still being computed has more in common, follow it instead."""
        best, source = 0, None
        for entry in self._kept:
            common = _common_prefix(entry[1], job.tokens)
            if common > best:
                best, source = common, entry
        leader, lead = None, best
        for other in active:
            common = _common_prefix(other.tokens, job.tokens)
            if common > lead and other.follow is None:
                leader, lead = other, common
        self.prompt_tokens += len(job.tokens)
        worth = min(WORTH_SHARING, len(job.tokens) // 2)
        if leader is not None and leader.fed < min(lead, len(job.tokens) - 1):
            if lead >= worth:  # (else the kept one, sharing less, is not worth it either)
                job.follow = (leader, lead)  # shared once the leader has computed it (_step)
        elif leader is not None:
            self._share(leader.seq_id, job, lead)
        elif source is not None and best >= worth:
            self._restore_kept(source, job, best)

    def _restore_kept(self, source: tuple[Any, list[int]], job: Job, length: int) -> None:
        self._kept.remove(source)  # used: the most recent now
        self._kept.append(source)
        self._restore(source[0], job, length)

    def _share(self, source: int, job: Job, length: int) -> None:
        length = min(length, len(job.tokens) - 1)  # the last prompt token is computed: its logits
        if length > job.fed:
            self._llama_cpp.llama_memory_seq_cp(self._memory, source, job.seq_id, job.fed, length)
            self.shared_tokens += length - job.fed
            job.fed = job.cached = length

    def _restore(self, cells: Any, job: Job, length: int) -> None:
        """Copy a kept conversation's cells into ``job``'s sequence and keep the first
        ``length`` (at most all of its prompt but the last token). When llama.cpp cannot
        place them, the job computes its prompt itself."""
        length = min(length, len(job.tokens) - 1)
        if length <= job.fed:
            return
        llama_cpp = self._llama_cpp
        if not llama_cpp.llama_state_seq_set_data(self._ctx, cells, len(cells), job.seq_id):
            llama_cpp.llama_memory_seq_rm(self._memory, job.seq_id, -1, -1)
            logger.debug("local backend: a kept conversation could not be copied back into the cache")
            return
        llama_cpp.llama_memory_seq_rm(self._memory, job.seq_id, length, -1)
        self.shared_tokens += length - job.fed
        job.fed = job.cached = length

    def _keep(self, job: Job) -> None:
        """Keep the finished ``job``'s conversation, prompt and answer, for the next ones:
        a copy of its cells, taken before the sequence leaves the cache."""
        if job.media is not None:
            return  # its cells hold images: no token list says what they are
        tokens = [*job.tokens, *job.output][: min(job.cached, self.kept_cells)]
        if not tokens or any(_common_prefix(kept, tokens) == len(tokens) for _, kept in self._kept):
            return  # nothing, or already kept whole
        # What the new one contains goes; then the least recently used, while too many.
        self._kept = [(cells, kept) for cells, kept in self._kept if _common_prefix(kept, tokens) < len(kept)]
        while self._kept and (len(self._kept) >= KEPT or
                              sum(len(kept) for _, kept in self._kept) + len(tokens) > self.kept_cells):
            del self._kept[0]
        llama_cpp = self._llama_cpp
        llama_cpp.llama_memory_seq_rm(self._memory, job.seq_id, len(tokens), -1)
        size = llama_cpp.llama_state_seq_get_size(self._ctx, job.seq_id)
        cells = (ctypes.c_uint8 * size)()
        if llama_cpp.llama_state_seq_get_data(self._ctx, cells, size, job.seq_id) == size:
            self._kept.append((cells, tokens))

    def _retire(self, job: Job, reason: Optional[str]) -> None:
        """Take the sequence out of the cache and tell the owner (who frees its capacity)."""
        try:
            if reason is not None:
                self._keep(job)
            self._llama_cpp.llama_memory_seq_rm(self._memory, job.seq_id, -1, -1)
            if job.sampler is not None:
                self._llama_cpp.llama_sampler_free(job.sampler)
                job.sampler = None
        finally:
            if job.media is not None:
                job.media.close()
            logger.debug("local backend: an answer left the batch (%s) after %d token(s)",
                         reason or ("cancelled" if job.cancel.is_set() else "failed"), job.generated)
            job.done(reason, job.generated)  # before END: the owner's report is complete by then
            if reason is not None:
                job.emit(END)

    def _sample(self, job: Job, index: int) -> int:
        """The next token from the logits at batch ``index`` (-1: the last).

        Greedy answers are chosen here, as llama.cpp's penalties and greedy samplers
        would choose them (the same float32 arithmetic, the first of equal logits), but
        without their pass over every token of the vocabulary with a hash lookup each,
        while llama.cpp's threads wait for the next step (docs/benchmarks.md, "B6 vs
        llama-server"). Other answers go through the llama.cpp sampler chain.
        """
        llama_cpp = self._llama_cpp
        if job.sampling.temperature != 0:
            return int(llama_cpp.llama_sampler_sample(job.sampler, self._ctx, index))
        pointer = llama_cpp.llama_get_logits_ith(self._ctx, index)
        if not pointer:
            raise BackendError(f"The local model gave no logits for batch index {index}", status=500)
        numpy = self._numpy
        logits = numpy.frombuffer(self._logits_row.from_address(ctypes.addressof(pointer.contents)),
                                  dtype=numpy.float32)
        penalty = numpy.float32(job.sampling.repeat_penalty)
        window = job.output[-_PENALTY_LAST_N:]
        if not window or penalty == 1:
            return int(logits.argmax())
        seen = numpy.fromiter(set(window), dtype=numpy.intp)
        scores = logits.copy()
        values = scores[seen]
        scores[seen] = numpy.where(values <= 0, values * penalty, values / penalty)
        return int(scores.argmax())

    def _sampler(self, sampling: Sampling) -> Any:
        """A llama.cpp sampler chain: repeat penalty, then greedy or top-k/top-p/min-p.

        The engine uses it for sampled answers only; the greedy chain is what ``_sample``
        reproduces for greedy ones (and what the tests check it against)."""
        llama_cpp = self._llama_cpp
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())

        def add(sampler: Any) -> None:
            llama_cpp.llama_sampler_chain_add(chain, sampler)

        add(llama_cpp.llama_sampler_init_penalties(
            self._n_vocab, _PENALTY_LAST_N, sampling.repeat_penalty, 0.0, 0.0))
        if sampling.temperature == 0:
            add(llama_cpp.llama_sampler_init_greedy())
        else:
            add(llama_cpp.llama_sampler_init_top_k(_TOP_K))
            add(llama_cpp.llama_sampler_init_top_p(sampling.top_p, 1))
            add(llama_cpp.llama_sampler_init_min_p(_MIN_P, 1))
            add(llama_cpp.llama_sampler_init_temp(sampling.temperature))
            seed = llama_cpp.LLAMA_DEFAULT_SEED if sampling.seed is None else sampling.seed & 0xFFFFFFFF
            add(llama_cpp.llama_sampler_init_dist(seed))
        return chain


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many tokens ``a`` and ``b`` have in common from the start."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
