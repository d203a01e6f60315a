"""Images for the local model: llama.cpp's multimodal library (mtmd), through llama-cpp-python.

A vision model in llama.cpp is two GGUF files: the language model and its multimodal
projector (``--mmproj``), which turns an image into embeddings the language model reads
like tokens. ``Projector`` loads the projector for a loaded ``_llama.Model``;
``Projector.prompt(text, images)`` splits the rendered prompt at its image markers and
prepares each image (decoded and resized by llama.cpp), giving a ``MediaPrompt``: text
chunks and image chunks, in order, with the KV cells they will fill.
``MediaPrompt.evaluate`` then feeds them into one sequence of a llama.cpp context: text
chunks are decoded, image chunks encoded by the projector and their embeddings decoded.
The batch engine does that on its own thread, for one conversation at a time
(``_batch.BatchEngine``).

The marker that stands for an image in the prompt is chosen at random when the projector
loads, so no text a user types can be taken for an image.
"""

from __future__ import annotations

import ctypes
import secrets
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gprochat.errors import BackendError

from ...images import Image
from ._llama import Model, import_binding, log_callback, recent_errors

__all__ = ["MAX_PIXELS", "MediaPrompt", "Projector", "image_dimensions"]

#: The largest image llama.cpp is asked to decode: 3 bytes a pixel, so at most 120 MB.
MAX_PIXELS = 40_000_000
_READS = ("image/png", "image/jpeg", "image/gif")  # llama.cpp's stb_image (WebP needs ffmpeg)


def image_dimensions(raw: bytes) -> tuple[int, int] | None:
    """``(width, height)`` from a PNG, GIF or JPEG header, or None when it does not say."""
    if raw.startswith(b"\x89PNG\r\n\x1a\n") and raw[12:16] == b"IHDR":
        return int.from_bytes(raw[16:20], "big"), int.from_bytes(raw[20:24], "big")
    if raw.startswith((b"GIF87a", b"GIF89a")):
        return int.from_bytes(raw[6:8], "little"), int.from_bytes(raw[8:10], "little")
    if raw.startswith(b"\xff\xd8"):
        at = 2
        while at + 9 < len(raw):
            if raw[at] != 0xFF:
                return None
            marker = raw[at + 1]
            if marker == 0xFF:  # fill byte
                at += 1
                continue
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # a start of frame
                return int.from_bytes(raw[at + 7:at + 9], "big"), int.from_bytes(raw[at + 5:at + 7], "big")
            at += 2 + int.from_bytes(raw[at + 2:at + 4], "big")
    return None


def _check_readable(index: int, image: Image, raw: bytes) -> None:
    """A 400 for an image llama.cpp should not be asked to decode."""
    if image.mime_type not in _READS:
        raise BackendError(f"Image {index} is {image.mime_type}: the local model reads PNG, JPEG and GIF "
                           "images; convert it to PNG or JPEG", status=400)
    size = image_dimensions(raw)
    if size is None:
        raise BackendError(f"Image {index} ({image.mime_type}) does not say its size in its header; "
                           "send it as PNG or JPEG", status=400)
    width, height = size
    if width * height > MAX_PIXELS:
        raise BackendError(f"Image {index} is {width}x{height} pixels, over the local model's limit of "
                           f"{MAX_PIXELS // 1_000_000} megapixels; send a smaller image", status=400)


_logged = False


def _import_mtmd() -> Any:
    """``llama_cpp.mtmd_cpp``, its log (which it prints to stderr otherwise) routed as
    llama.cpp's is, to the ``gprochat.server.local.llama_cpp`` logger."""
    global _logged
    import_binding()
    try:
        from llama_cpp import mtmd_cpp
    except (ImportError, OSError) as exc:
        raise RuntimeError(f"this llama-cpp-python has no multimodal library (mtmd): {exc}") from exc
    if not _logged:
        callback = log_callback()
        mtmd_cpp.mtmd_log_set(callback, ctypes.c_void_p(0))
        mtmd_cpp.mtmd_helper_log_set(callback, ctypes.c_void_p(0))
        _logged = True
    return mtmd_cpp


class Projector:
    """A multimodal projector GGUF loaded for ``model``; ``threads`` encode each image."""

    def __init__(self, path: Path, model: Model, threads: int) -> None:
        mtmd = _import_mtmd()
        self._mtmd = mtmd
        self.path = path
        # Random, so that no user text contains it; kept alive while the C side holds it.
        self.marker = f"<__gprochat_image_{secrets.token_hex(8)}__>"
        self._marker_bytes = self.marker.encode()
        params = mtmd.mtmd_context_params_default()
        params.use_gpu = False
        params.print_timings = False
        params.n_threads = threads
        params.media_marker = self._marker_bytes
        params.warmup = False
        context = mtmd.mtmd_init_from_file(str(path).encode(), model.model, params)
        if not context:
            why = "; ".join(recent_errors()) or "llama.cpp gave no reason"
            raise RuntimeError(f"llama.cpp could not load the projector {path} for this model ({why}); "
                               "is it the projector made for this model?")
        self._context = context
        if not mtmd.mtmd_support_vision(context):
            mtmd.mtmd_free(context)
            raise RuntimeError(f"the projector {path} takes no images (an audio projector?)")
        self._model = model  # the projector reads the model's embeddings: keep it alive
        # One image at a time is prepared or encoded: the projector's buffers are its own.
        self.lock = threading.Lock()

    def prompt(self, text: str, images: Sequence[Image], *, add_special: bool = True) -> MediaPrompt:
        """``text`` (with one ``marker`` per image, in order) and the images, prepared;
        ``add_special``: add the model's BOS token, as tokenizing the text alone would.

        BackendError 400 when an image cannot be decoded, 500 when llama.cpp fails.
        """
        mtmd = self._mtmd
        bitmaps: list[Any] = []
        chunks = None
        try:
            for index, image in enumerate(images, 1):
                raw = image.decode()
                _check_readable(index, image, raw)
                buffer = (ctypes.c_uint8 * len(raw)).from_buffer_copy(raw)
                with self.lock:
                    bitmap = mtmd.mtmd_helper_bitmap_init_from_buf(self._context, buffer, len(raw), False)
                if not bitmap:
                    raise BackendError(
                        f"Image {index} ({image.mime_type}, {image.size} bytes) could not be decoded "
                        "for the local model; send it as PNG or JPEG", status=400)
                bitmaps.append(bitmap)
            encoded = text.encode("utf-8")
            source = mtmd.mtmd_input_text()
            source.text = encoded
            source.text_len = len(encoded)
            source.add_special = add_special
            source.parse_special = True
            chunks = mtmd.mtmd_input_chunks_init()
            if not chunks:
                raise BackendError("The local model could not prepare the images (out of memory?)",
                                   status=500)
            array = (mtmd.mtmd_bitmap_p_ctypes * len(bitmaps))(*bitmaps)
            with self.lock:
                status = mtmd.mtmd_tokenize(self._context, chunks, ctypes.byref(source), array,
                                            len(bitmaps))
            if status != 0:
                raise BackendError(f"The local model could not prepare the images (mtmd_tokenize "
                                   f"returned {status})", status=500)
            prompt = MediaPrompt(self, chunks)
            chunks = None
            return prompt
        finally:
            if chunks:
                mtmd.mtmd_input_chunks_free(chunks)
            for bitmap in bitmaps:
                mtmd.mtmd_bitmap_free(bitmap)

    def close(self) -> None:
        if self._context:
            self._mtmd.mtmd_free(self._context)
            self._context = None


class MediaPrompt:
    """A prompt with images, prepared: ``cells`` KV cells, ``images`` image chunks."""

    def __init__(self, projector: Projector, chunks: Any) -> None:
        mtmd = projector._mtmd
        self._projector = projector
        self._chunks = chunks
        self.cells = int(mtmd.mtmd_helper_get_n_tokens(chunks))
        self.positions = int(mtmd.mtmd_helper_get_n_pos(chunks))
        count = mtmd.mtmd_input_chunks_size(chunks)
        self.images = sum(
            mtmd.mtmd_input_chunk_get_type(mtmd.mtmd_input_chunks_get(chunks, index))
            == mtmd.MTMD_INPUT_CHUNK_TYPE_IMAGE
            for index in range(count)
        )

    def evaluate(self, context: Any, seq_id: int, n_batch: int) -> int:
        """Decode the whole prompt into sequence ``seq_id`` of ``context`` from position 0,
        with the logits of its last token ready; returns the next position."""
        projector, mtmd = self._projector, self._projector._mtmd
        llama_cpp = import_binding()
        after = llama_cpp.llama_pos(0)
        with projector.lock:
            status = mtmd.mtmd_helper_eval_chunks(projector._context, context, self._chunks,
                                                  llama_cpp.llama_pos(0), llama_cpp.llama_seq_id(seq_id),
                                                  n_batch, True, ctypes.byref(after))
        if status != 0:
            raise BackendError(f"The local model could not read the images (mtmd_helper_eval_chunks "
                               f"returned {status}); retry shortly", status=503)
        return int(after.value)

    def close(self) -> None:
        if self._chunks:
            self._projector._mtmd.mtmd_input_chunks_free(self._chunks)
            self._chunks = None
