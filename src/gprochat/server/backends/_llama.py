"""llama-cpp-python, the binding to llama.cpp: checked, quiet, and used at its low level.

- ``import_binding()`` imports ``llama_cpp`` once and checks that it has what the batch
  engine calls (``check_binding``): a binding outside that window fails with a
  ``BindingError`` naming the installed version and the one to install, instead of
  sampling wrongly (ctypes accepts an argument a function does not declare).
- llama.cpp's own log goes to the ``gprochat.server.local.llama_cpp`` logger, at debug
  level, through its log callback. llama-cpp-python's ``Llama(verbose=False)`` silences
  it instead by pointing the whole process's stdout and stderr at /dev/null while a
  model loads, which loses every other thread's output meanwhile; nothing here does.
- ``Model`` loads a GGUF with ``llama_model_load_from_file`` and offers what the
  backend needs of it (tokens, texts, the chat template): no ``Llama`` object, no
  private attribute of one.

What the engine needs, and from which binding version (checked by what exists, not only
by the version number):

============================================  =========
``llama_get_memory``, ``llama_memory_seq_*``   0.3.10
``llama_context_params.kv_unified``            0.3.15
``llama_sampler_init_penalties(n_vocab, ...)`` 0.3.35
============================================  =========
"""

from __future__ import annotations

import ctypes
import logging
import re
import threading
from collections import deque
from pathlib import Path
from types import ModuleType
from typing import Any, Optional

__all__ = ["REQUIREMENT", "BindingError", "Model", "check_binding", "import_binding", "log_callback",
           "recent_errors"]

REQUIREMENT = "llama-cpp-python>=0.3.35,<0.4"
_OLDEST = (0, 3, 35)
_NEWEST_TESTED = (0, 4)  # exclusive

logger = logging.getLogger("gprochat.server.local")
llama_logger = logging.getLogger("gprochat.server.local.llama_cpp")


class BindingError(ValueError):
    """The installed llama-cpp-python cannot run the local backend; the message says
    which version is installed and which to install."""


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


def check_binding(binding: ModuleType | Any) -> None:
    """Raise ``BindingError`` unless ``binding`` (the ``llama_cpp`` module) has what the
    batch engine calls, with the signatures it calls them with."""
    version = str(getattr(binding, "__version__", "unknown"))
    upgrade = f"pip install -U '{REQUIREMENT}'"
    missing = []
    if not hasattr(binding, "llama_get_memory") or not hasattr(binding, "llama_memory_seq_cp"):
        missing.append("llama_get_memory/llama_memory_seq_* (from 0.3.10)")
    params = getattr(binding, "llama_context_params", None)
    if "kv_unified" not in {name for name, *_ in getattr(params, "_fields_", ())}:
        missing.append("llama_context_params.kv_unified (from 0.3.15)")
    penalties = getattr(binding, "llama_sampler_init_penalties", None)
    if len(getattr(penalties, "argtypes", None) or ()) != 5:
        missing.append("llama_sampler_init_penalties taking n_vocab (from 0.3.35)")
    numbers = _version_tuple(version)
    if missing or numbers < _OLDEST:
        too_old = (" is too old for the local backend" if numbers < _OLDEST
                   else " lacks what the local backend needs")
        lacks = f" (it lacks {'; '.join(missing)})" if missing else ""
        raise BindingError(f"llama-cpp-python {version}{too_old}: it needs >= 0.3.35{lacks}; {upgrade}")
    if numbers >= _NEWEST_TESTED:
        logger.warning("local backend: llama-cpp-python %s is newer than the versions tested (%s); "
                       "if answers look wrong, pip install '%s'", version, REQUIREMENT, REQUIREMENT)


_binding: Optional[ModuleType] = None
_binding_lock = threading.Lock()


def import_binding() -> ModuleType:
    """``llama_cpp``, checked, with llama.cpp's log routed to Python logging.

    ImportError when it is not installed; ``BindingError`` when it is the wrong one.
    """
    global _binding
    with _binding_lock:
        if _binding is None:
            import llama_cpp

            check_binding(llama_cpp)
            _route_log(llama_cpp)
            llama_cpp.llama_backend_init()
            _binding = llama_cpp
        return _binding


# -- llama.cpp's log --------------------------------------------------------------

# ggml_log_level: NONE 0, DEBUG 1, INFO 2, WARN 3, ERROR 4, CONT 5 (continues the last).
_ERROR, _CONT = 4, 5
_pending = threading.local()  # a line llama.cpp has not finished yet, per thread
_errors: deque[str] = deque(maxlen=4)
_callback: Any = None  # the ctypes callback must outlive every call from C


def _on_log(level: int, text: Optional[bytes], _user_data: Any) -> None:
    try:
        if level != _CONT:
            _pending.level = level
        parts: list[str] = getattr(_pending, "parts", [])
        parts.append((text or b"").decode("utf-8", "replace"))
        joined = "".join(parts)
        if not joined.endswith("\n"):
            _pending.parts = [joined]
            return
        _pending.parts = []
        for line in joined.splitlines():
            if line.strip():
                if getattr(_pending, "level", 0) == _ERROR:
                    _errors.append(line.strip())
                llama_logger.debug("%s", line)
    except Exception:  # noqa: S110 - an exception must not unwind into C
        pass


def _route_log(binding: ModuleType) -> None:
    global _callback
    _callback = binding.llama_log_callback(_on_log)
    binding.llama_log_set(_callback, ctypes.c_void_p(0))


def log_callback() -> Any:
    """The ctypes callback that routes a llama.cpp library's log here (mtmd's too)."""
    import_binding()
    return _callback


def recent_errors() -> list[str]:
    """The last error lines llama.cpp logged (to say why a model did not load)."""
    return list(_errors)


# -- the model ---------------------------------------------------------------------


class Model:
    """A GGUF's weights and vocabulary, loaded with llama.cpp's C API.

    The method names are ``llama_cpp.Llama``'s, so the chat template code takes either.
    """

    def __init__(self, path: Path) -> None:
        binding = import_binding()
        self._binding = binding
        _errors.clear()
        params = binding.llama_model_default_params()
        model = binding.llama_model_load_from_file(str(path).encode(), params)
        if not model:
            why = "; ".join(recent_errors()) or "llama.cpp gave no reason"
            raise RuntimeError(f"llama.cpp could not load it ({why})")
        self.model = model
        self._vocab = binding.llama_model_get_vocab(model)
        self.metadata = self._read_metadata()

    def _read_metadata(self) -> dict[str, str]:
        binding, model = self._binding, self.model
        result = {}
        buffer = ctypes.create_string_buffer(1024)
        for index in range(binding.llama_model_meta_count(model)):
            texts = []
            for read in (binding.llama_model_meta_key_by_index, binding.llama_model_meta_val_str_by_index):
                size = read(model, index, buffer, len(buffer))
                if size >= len(buffer):
                    buffer = ctypes.create_string_buffer(size + 1)
                    read(model, index, buffer, len(buffer))
                texts.append(buffer.value.decode("utf-8", "replace"))
            result[texts[0]] = texts[1]
        return result

    def n_ctx_train(self) -> int:
        return int(self._binding.llama_model_n_ctx_train(self.model))

    def token_bos(self) -> int:
        return int(self._binding.llama_vocab_bos(self._vocab))

    def token_eos(self) -> int:
        return int(self._binding.llama_vocab_eos(self._vocab))

    def tokenize(self, text: bytes, add_bos: bool = True, special: bool = False) -> list[int]:
        binding = self._binding
        room = len(text) + 2
        while True:
            tokens = (binding.llama_token * room)()
            count = binding.llama_tokenize(self._vocab, text, len(text), tokens, room, add_bos, special)
            if count >= 0:
                return list(tokens[:count])
            room = -count  # too small: llama.cpp says how many are needed

    def detokenize(self, tokens: list[int], special: bool = False) -> bytes:
        binding = self._binding
        buffer = ctypes.create_string_buffer(64)
        out = []
        for token in tokens:
            size = binding.llama_token_to_piece(self._vocab, token, buffer, len(buffer), 0, special)
            if size < 0:
                buffer = ctypes.create_string_buffer(-size)
                size = binding.llama_token_to_piece(self._vocab, token, buffer, len(buffer), 0, special)
            out.append(buffer.raw[:size])
        return b"".join(out)

    def close(self) -> None:
        if self.model:
            self._binding.llama_model_free(self.model)
            self.model = None
