"""Images in a conversation: what one is, how it is checked, how it travels.

An image travels as base64 inside a message, in Gemini's shape
(``{"inline_data": {"mime_type": "image/png", "data": "<base64>"}}``) or OpenAI's
(``{"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}``). An
``Image`` keeps the base64 text it arrived as (for a data URL, the URL itself and
where the base64 starts in it), so the server passes it on without copying, decoding
or encoding it again. Checking it scans the text once (strict base64, in small
slices) and decodes only its first bytes, to learn the real type from their magic
numbers (never from the declared type); the size follows from the length.
``parse_data_url`` is the one reader of data URLs. The SHA-256 is computed
only when someone asks for it (the echo backend, the conversation log).

Only raster types are accepted: PNG, JPEG, WebP and GIF (no SVG: it is a document
that can carry scripts).

>>> image = Image.from_bytes(b"\\x89PNG\\r\\n\\x1a\\n" + bytes(8))
>>> image.mime_type, image.size
('image/png', 16)
>>> Image.from_data_url(image.data_url) == image
True
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

from .errors import ImageError

__all__ = [
    "IMAGE_TYPES",
    "DEFAULT_MAX_IMAGE_BYTES",
    "DEFAULT_MAX_IMAGES",
    "Image",
    "ImageSource",
    "sniff_image_type",
    "load_image",
    "parse_data_url",
]

#: The accepted types, by the name Gemini and browsers give them.
IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp", "image/gif")
DEFAULT_MAX_IMAGE_BYTES = 10 * 1024 * 1024
DEFAULT_MAX_IMAGES = 16

_ACCEPTED = "PNG, JPEG, WebP or GIF"
# The base64 characters decoded to read the magic numbers and name what a refused file
# looks like (a multiple of 4: 513 bytes).
_HEAD_CHARS = 684
_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
# data:[<type>][;<parameter>]*,<data>; the type and parameters hold no comma.
_DATA_URL = re.compile(r"data:([^,;]*)((?:;[^,;]*)*),", re.IGNORECASE)
# The base64 characters checked at a time: a slice well under glibc's mmap threshold
# (128 KiB), so scanning a large image reuses one small block of memory.
_SCAN_CHARS = 32 * 1024

ImageSource = Union[bytes, bytearray, memoryview, str, "os.PathLike[str]", "Image"]


def sniff_image_type(head: bytes) -> Optional[str]:
    """The raster type the first bytes of a file announce, or None for anything else."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    return None


def _describe_bytes(head: bytes) -> str:
    """What a refused file looks like, for the error message."""
    stripped = head.lstrip()
    if stripped.startswith(b"<"):
        return "SVG or other markup" if b"svg" in stripped[:512].lower() else "markup (HTML or XML)"
    if not head:
        return "empty"
    try:
        head[:64].decode("utf-8")
    except UnicodeDecodeError:
        return "not a PNG, JPEG, WebP or GIF image"
    return "text"


@dataclass(frozen=True, eq=False, repr=False)
class Image:
    """One checked image: its real ``mime_type``, its ``data`` as base64, ``size`` and ``sha256``.

    Build one with ``from_base64`` (what arrives on the wire), ``from_bytes``,
    ``from_data_url`` or ``load_image`` (bytes, a path or a data URL); each checks the
    bytes and raises ``ImageError`` saying what is wrong.

    The base64 stays in the text it arrived in: ``data_span`` is that text and where
    the base64 starts in it (for a data URL, the URL itself), so a writer that takes
    it from there copies nothing; ``data`` slices it out, once, when first asked for.
    """

    mime_type: str
    size: int
    _text: str
    _start: int = 0

    @functools.cached_property
    def data(self) -> str:
        """The base64 text (sliced out of its data URL when first asked for)."""
        return self._text[self._start :] if self._start else self._text

    @property
    def data_span(self) -> tuple[str, int]:
        """The text holding the base64, and the offset where it starts (to its end)."""
        return self._text, self._start

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Image):
            return NotImplemented
        return (self.mime_type, self.size, self.data) == (other.mime_type, other.size, other.data)

    def __hash__(self) -> int:
        return hash((self.mime_type, self.size, self.data))

    @functools.cached_property
    def sha256(self) -> str:
        """The bytes' SHA-256 in hex, computed (by decoding once) when first asked for."""
        return hashlib.sha256(self.decode()).hexdigest()

    @classmethod
    def from_base64(
        cls,
        data: str,
        declared_type: Optional[str] = None,
        *,
        start: int = 0,
        where: str = "image",
        max_bytes: Optional[int] = None,
    ) -> Image:
        """Check base64 text as received; ``where`` names the part in error messages.

        The base64 is ``data[start:]`` (a data URL's is checked and kept where it is, in
        the URL: see ``data_span``). It must be strict base64 (no whitespace, padding
        where it belongs); the bytes must be a raster image whose magic numbers agree
        with ``declared_type`` (when one is given) and that is at most ``max_bytes``
        long. The size follows from the length and is checked once, before the scan.
        """
        if not isinstance(data, str):
            raise ImageError(f"{where} data must be a base64 string, not {type(data).__name__}", where=where)
        length = len(data) - start
        if length <= 0:
            raise ImageError(f"{where} is empty: attach a PNG, JPEG, WebP or GIF image", where=where)
        if length % 4:
            raise ImageError(
                f"{where} is not valid base64: its length ({length}) is not a multiple of 4",
                where=where,
            )
        tail = data[-3:]
        padding = len(tail) - len(tail.rstrip("="))
        if padding > 2:
            raise ImageError(f"{where} is not valid base64: too much '=' padding at its end", where=where)
        size = length // 4 * 3 - padding
        if max_bytes is not None and size > max_bytes:
            raise ImageError(
                f"{where} is {size} bytes, over the limit of {max_bytes} bytes: send a smaller image",
                where=where,
                status=413,
            )
        _check_alphabet(data, start, len(data) - padding, where)
        head = binascii.a2b_base64(data[start : start + _HEAD_CHARS])
        real = sniff_image_type(head)
        if real is None:
            raise ImageError(
                f"{where} is {_describe_bytes(head)}, not an image this server takes: "
                f"send {_ACCEPTED}",
                where=where,
            )
        declared = (declared_type or "").strip().lower()
        if declared == "image/jpg":
            declared = "image/jpeg"
        if declared and declared != real:
            raise ImageError(
                f"{where} is declared {declared_type!r} but its bytes are {real}: "
                "send the image's real type",
                where=where,
            )
        return cls(mime_type=real, size=size, _text=data, _start=start)

    @classmethod
    def from_bytes(cls, raw: Union[bytes, bytearray, memoryview], *, where: str = "image") -> Image:
        """Check raw image bytes and encode them once."""
        raw = bytes(raw)
        real = sniff_image_type(raw[:32])
        if real is None:
            raise ImageError(
                f"{where} is {_describe_bytes(raw[:512])}, not an image: send {_ACCEPTED}",
                where=where,
            )
        image = cls(mime_type=real, size=len(raw), _text=base64.b64encode(raw).decode("ascii"))
        image.__dict__["sha256"] = hashlib.sha256(raw).hexdigest()  # the bytes are at hand
        return image

    @classmethod
    def from_data_url(
        cls, url: str, *, where: str = "image", max_bytes: Optional[int] = None
    ) -> Image:
        """Check a ``data:image/...;base64,...`` URL (``parse_data_url``, then ``from_base64``)."""
        declared, start = parse_data_url(url, where=where)
        return cls.from_base64(url, declared, start=start, where=where, max_bytes=max_bytes)

    def decode(self) -> bytes:
        """The image's bytes (for a backend that needs them, such as a local model)."""
        text, start = self.data_span
        return base64.b64decode(text[start:] if start else text)

    @property
    def data_url(self) -> str:
        """``data:<mime_type>;base64,<data>`` (the URL it came in, when it has that form)."""
        prefix = f"data:{self.mime_type};base64,"
        text, start = self.data_span
        if start == len(prefix) and text.startswith(prefix):
            return text
        return prefix + self.data

    def inline_part(self) -> dict[str, Any]:
        """The image as a Gemini part: ``{"inline_data": {"mime_type", "data"}}``."""
        return {"inline_data": {"mime_type": self.mime_type, "data": self.data}}

    def openai_part(self) -> dict[str, Any]:
        """The image as an OpenAI content part with a data URL."""
        return {"type": "image_url", "image_url": {"url": self.data_url}}

    def describe(self) -> str:
        """One line naming the image: ``image/png, 1234 bytes, sha256 <hex>``."""
        return f"{self.mime_type}, {self.size} bytes, sha256 {self.sha256}"

    def __repr__(self) -> str:
        return f"Image({self.mime_type}, {self.size} bytes, sha256={self.sha256[:12]}...)"


def parse_data_url(url: str, *, where: str = "image") -> tuple[Optional[str], int]:
    """A ``data:`` URL's declared type (None when it names none) and where its base64 starts.

    The one reader of data URLs (the provider, ``load_image``, the gateway):
    ``data:[<type>][;<parameter>]*;base64,<data>``, the scheme and ``;base64`` in any
    case. The URL is not copied; ``Image.from_base64(url, type, start=...)`` checks the
    base64 where it is. ``where`` names the URL in the ``ImageError``.

    >>> parse_data_url("data:image/png;base64,iVBORw0KGgo=")
    ('image/png', 22)
    """
    match = _DATA_URL.match(url) if isinstance(url, str) else None
    if match is None:
        if isinstance(url, str) and url[:5].lower() == "data:":
            raise ImageError(
                f"{where} is not a valid data URL (no ',' after its type): use "
                "'data:image/png;base64,...'",
                where=where,
            )
        raise ImageError(
            f"{where} is not a data URL: give the image as 'data:image/png;base64,...'",
            where=where,
        )
    parameters = match.group(2).split(";")[1:]
    if not parameters or parameters[-1].strip().lower() != "base64":
        raise ImageError(
            f"{where} is a data URL without ';base64': send the image's bytes as base64 "
            "('data:image/png;base64,...')",
            where=where,
        )
    return match.group(1).strip() or None, match.end()


def _check_alphabet(data: str, start: int, end: int, where: str) -> None:
    """ImageError unless ``data[start:end]`` is all base64 alphabet (the padding is cut off).

    Strict: no whitespace, no URL-safe ``-``/``_``, no ``=`` inside. Scanned in
    slices with ``bytes.translate`` (C speed) rather than decoded: a large image costs
    one scan, and no copy of its size (a slice this small reuses the same memory).
    """
    for offset in range(start, end, _SCAN_CHARS):
        piece = data[offset : min(offset + _SCAN_CHARS, end)]
        if not piece.isascii():
            raise ImageError(f"{where} is not valid base64: it holds non-ASCII characters", where=where)
        if piece.encode("ascii").translate(None, _ALPHABET):
            raise ImageError(
                f"{where} is not valid base64: it holds characters outside A-Z, a-z, 0-9, '+' "
                "and '/' (no whitespace, no URL-safe '-' or '_'; '=' only at the end)",
                where=where,
            )


def load_image(source: ImageSource, *, where: str = "image") -> Image:
    """An ``Image`` from bytes, a file path, a data URL, or an ``Image`` (g4f's ``images=``)."""
    if isinstance(source, Image):
        return source
    if isinstance(source, (bytes, bytearray, memoryview)):
        return Image.from_bytes(source, where=where)
    if isinstance(source, str) and source[:5].lower() == "data:":
        return Image.from_data_url(source, where=where)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise ImageError(f"{where}: cannot read {path}: {exc.strerror or exc}", where=where) from None
        return Image.from_bytes(raw, where=f"{where} {path.name}")
    raise ImageError(
        f"{where} must be bytes, a file path or a data URL, not {type(source).__name__}",
        where=where,
    )
