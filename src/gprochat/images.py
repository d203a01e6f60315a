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

A large image need not become text at all: ``base64_run`` checks a string of a
request body's bytes where it is (``protocol.decode_body_keeping_base64`` finds them),
and an ``Image`` built from that ``Base64Run`` keeps the body's bytes, which a backend
writes on as they are.

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
import codecs
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
    "Base64Run",
    "Image",
    "ImageSource",
    "base64_run",
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
# The longest data URL prefix (``data:<type>;<parameters>,``) ``base64_run`` reads.
_MAX_PREFIX = 256

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


# Other formats a user may well attach, told by their magic numbers so that the refusal
# names them: (prefix at offset 0, name).
_OTHER_FORMATS = (
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"\x00\x00\x01\x00", "an ICO icon"),
    (b"\x00\x00\x02\x00", "a CUR cursor"),
    (b"\xff\x0a", "a JPEG XL image"),
    (b"\x00\x00\x00\x0cJXL ", "a JPEG XL image"),
    (b"8BPS", "a Photoshop (PSD) image"),
    (b"%PDF-", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive (or a document in one: DOCX, ODT, EPUB)"),
    (b"PK\x05\x06", "a ZIP archive"),
    (b"\x1f\x8b", "gzip-compressed data (an SVGZ drawing, or an archive)"),
    (b"OggS", "an Ogg audio or video file"),
    (b"ID3", "an MP3 audio file"),
    (b"fLaC", "a FLAC audio file"),
    (b"\x1aE\xdf\xa3", "a Matroska or WebM video"),
)
# ISO media files (ftyp box): the major brand says which.
_FTYP_BRANDS = {
    b"avif": "an AVIF image", b"avis": "an AVIF image sequence",
    b"heic": "a HEIC image", b"heix": "a HEIC image", b"heim": "a HEIC image",
    b"heis": "a HEIC image", b"hevc": "a HEIC image sequence", b"hevx": "a HEIC image sequence",
    b"mif1": "a HEIF image", b"msf1": "a HEIF image sequence",
}
_RIFF_FORMATS = {b"WAVE": "a WAVE audio file", b"AVI ": "an AVI video"}
_UTF8_BOM = b"\xef\xbb\xbf"


def _other_format(head: bytes) -> Optional[str]:
    """The name of a known format that is not one we take (``"a BMP image"``), or None."""
    if head[:2] == b"BM" and len(head) >= 14 and head[6:10] == bytes(4):
        return "a BMP image"  # its reserved fields are zero: no text starts "BM" and NULs
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        return _FTYP_BRANDS.get(brand, f"an ISO media file (brand {brand.decode('latin-1')!r}: "
                                       "a video, or an image format this server does not take)")
    if head[:4] == b"RIFF":
        return _RIFF_FORMATS.get(head[8:12], "a RIFF file (audio or video)")
    for magic, name in _OTHER_FORMATS:
        if head.startswith(magic):
            return name
    return None


def _as_text(head: bytes) -> Optional[str]:
    """The start of a file as text (UTF-8, with or without a BOM, or UTF-16), or None.

    A NUL byte makes it binary (UTF-8 allows one, text files have none); a character cut
    by the end of ``head`` does not.
    """
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return head[: len(head) & ~1].decode("utf-16")
        except UnicodeDecodeError:
            return None
    # Markup in UTF-16 without a BOM: "<\0?\0" (little-endian) or "\0<\0?" (big-endian).
    for encoding, pattern in (("utf-16-le", b"<\x00.\x00"), ("utf-16-be", b"\x00<\x00.")):
        if re.match(pattern, head, re.DOTALL):
            try:
                return head[: len(head) & ~1].decode(encoding)
            except UnicodeDecodeError:
                return None
    head = head.removeprefix(_UTF8_BOM)
    if b"\x00" in head:
        return None
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        return decoder.decode(head[:512], final=False)
    except UnicodeDecodeError:
        return None


def _refused_as(head: bytes) -> tuple[str, bool]:
    """What a refused file is, for the error message ("" for binary of no known format),
    and whether it is a named format."""
    if not head:
        return "empty", False
    other = _other_format(head)
    if other is not None:
        return other, True
    text = _as_text(head)
    if text is None:
        return "", False
    stripped = text.lstrip("\ufeff \t\r\n")
    if stripped.startswith("<"):
        return ("SVG or other markup" if "svg" in stripped.lower() else "markup (HTML or XML)"), False
    return "text", False


def _not_accepted(where: str, head: bytes, *, server: bool) -> str:
    """``messages[0].parts[1] is a BMP image: send PNG, JPEG, WebP or GIF`` and the like."""
    what, named = _refused_as(head)
    takes = " this server takes" if server else ""
    if named:
        return f"{where} is {what}: send {_ACCEPTED} (convert it)"
    if not what:  # binary, of no format named above
        return (f"{where} is not an image{takes}: its bytes are not a PNG, JPEG, WebP or GIF "
                f"image, nor another format it knows; send {_ACCEPTED}")
    return f"{where} is {what}, not an image{takes}: send {_ACCEPTED}"


@dataclass(frozen=True, eq=False, repr=False)
class Image:
    """One checked image: its real ``mime_type``, its ``data`` as base64, ``size`` and ``sha256``.

    Build one with ``from_base64`` (what arrives on the wire), ``from_bytes``,
    ``from_data_url`` or ``load_image`` (bytes, a path or a data URL); each checks the
    bytes and raises ``ImageError`` saying what is wrong.

    The base64 stays where it arrived: ``data_span`` is that text (or, from a
    ``Base64Run``, the request body's bytes) and where the base64 starts and ends in
    it, so a writer that takes it from there copies nothing; ``data`` slices it out
    (as text), once, when first asked for.
    """

    mime_type: str
    size: int
    _text: Union[str, bytes]
    _start: int = 0
    _end: Optional[int] = None  # None: to the end of _text

    @functools.cached_property
    def data(self) -> str:
        """The base64 text (sliced out of its data URL or body when first asked for)."""
        text, start, end = self.data_span
        if isinstance(text, bytes):
            return str(memoryview(text)[start:end], "ascii")  # decoded from where it is
        return text[start:end] if start or end != len(text) else text

    @property
    def data_span(self) -> tuple[Union[str, bytes], int, int]:
        """The text (or bytes) holding the base64, and where it starts and ends in it."""
        return self._text, self._start, len(self._text) if self._end is None else self._end

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
        data: Union[str, Base64Run],
        declared_type: Optional[str] = None,
        *,
        start: int = 0,
        where: str = "image",
        max_bytes: Optional[int] = None,
    ) -> Image:
        """Check base64 text as received; ``where`` names the part in error messages.

        The base64 is ``data[start:]`` (a data URL's is checked and kept where it is, in
        the URL: see ``data_span``), or a ``Base64Run``'s (``start`` is then unused: the
        run knows where its base64 starts, and its alphabet is already checked). It
        must be strict base64 (no whitespace, padding where it belongs); the bytes must
        be a raster image whose magic numbers agree with ``declared_type`` (when one is
        given) and that is at most ``max_bytes`` long. The size follows from the length
        and is checked once, before the scan.
        """
        text: Union[str, bytes]
        if isinstance(data, Base64Run):
            text, start, end, scanned = data.buffer, data.data_start, data.end, True
        elif isinstance(data, str):
            text, end, scanned = data, len(data), False
        else:
            raise ImageError(f"{where} data must be a base64 string, not {type(data).__name__}", where=where)
        length = end - start
        if length <= 0:
            raise ImageError(f"{where} is empty: attach a PNG, JPEG, WebP or GIF image", where=where)
        if length % 4:
            raise ImageError(
                f"{where} is not valid base64: its length ({length}) is not a multiple of 4",
                where=where,
            )
        tail = text[end - 3 : end]
        padding = len(tail) - len(tail.rstrip(b"=") if isinstance(tail, bytes) else tail.rstrip("="))
        if padding > 2:
            raise ImageError(f"{where} is not valid base64: too much '=' padding at its end", where=where)
        size = length // 4 * 3 - padding
        if max_bytes is not None and size > max_bytes:
            raise ImageError(
                f"{where} is {size} bytes, over the limit of {max_bytes} bytes: send a smaller image",
                where=where,
                status=413,
            )
        if not scanned:
            assert isinstance(text, str)
            _check_alphabet(text, start, end - padding, where)
        head = binascii.a2b_base64(text[start : min(start + _HEAD_CHARS, end)])
        real = sniff_image_type(head)
        if real is None:
            raise ImageError(_not_accepted(where, head, server=True), where=where)
        declared = (declared_type or "").strip().lower()
        if declared == "image/jpg":
            declared = "image/jpeg"
        if declared and declared != real:
            raise ImageError(
                f"{where} is declared {declared_type!r} but its bytes are {real}: "
                "send the image's real type",
                where=where,
            )
        if isinstance(text, bytes):
            return cls(mime_type=real, size=size, _text=text, _start=start, _end=end)
        return cls(mime_type=real, size=size, _text=text, _start=start)

    @classmethod
    def from_bytes(cls, raw: Union[bytes, bytearray, memoryview], *, where: str = "image") -> Image:
        """Check raw image bytes and encode them once."""
        raw = bytes(raw)
        real = sniff_image_type(raw[:32])
        if real is None:
            raise ImageError(_not_accepted(where, raw[:512], server=False), where=where)
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
        text, start, end = self.data_span
        if isinstance(text, bytes):  # checked strict base64 already: decoded from where it is
            return binascii.a2b_base64(memoryview(text)[start:end])
        return base64.b64decode(text[start:end] if start or end != len(text) else text)

    @property
    def data_url(self) -> str:
        """``data:<mime_type>;base64,<data>`` (the URL it came in, when it has that form)."""
        prefix = f"data:{self.mime_type};base64,"
        text, start, end = self.data_span
        if isinstance(text, str) and start == len(prefix) and end == len(text) and text.startswith(prefix):
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


@dataclass(frozen=True, eq=False, repr=False)
class Base64Run:
    """A JSON string left in a request body's bytes: ``buffer[start:end]``, whose base64
    (``buffer[data_start:end]``, after a data URL's prefix if it has one) is known to be
    all base64 alphabet, with at most two ``=`` at its end.

    Only ``base64_run`` makes one (it checks the alphabet); ``Image.from_base64`` then
    checks the rest (length, padding, size, magic numbers) without scanning it again.
    """

    buffer: bytes
    start: int
    data_start: int
    end: int

    @property
    def prefix(self) -> str:
        """A data URL's ``data:<type>;base64,`` ("" for bare base64)."""
        return self.buffer[self.start : self.data_start].decode("ascii")

    def text(self) -> str:
        """The whole string (decoded from the buffer, not sliced out of it first)."""
        return str(memoryview(self.buffer)[self.start : self.end], "ascii")

    def __repr__(self) -> str:
        return f"Base64Run({self.prefix!r}, {self.end - self.data_start} characters)"


def base64_run(buffer: bytes, start: int, end: int) -> Optional[Base64Run]:
    """``buffer[start:end]`` as a ``Base64Run`` if it is base64 or a data URL of base64, else None.

    The string must hold no escape (the caller knows: it found the string's end). Bare
    base64 is taken when every character is in the alphabet, with at most two ``=`` at
    the end; a data URL when it starts ``data:`` (any case), its prefix up to the first
    ',' is at most 256 ASCII characters, and what follows the ',' is base64 as above.
    Anything else (whitespace, ``-``/``_``, an ``=`` inside, non-ASCII) is None: the
    caller parses it as text, and ``Image.from_base64`` refuses it as it always has.
    The scan is ``_check_alphabet``'s, on bytes: a slice at a time, no copy of the run.
    """
    data_start = start
    if buffer[start : start + 5].lower() == b"data:":
        comma = buffer.find(b",", start, min(end, start + _MAX_PREFIX))
        if comma < 0 or not buffer[start:comma].isascii():
            return None
        data_start = comma + 1
    if end - data_start < 4:
        return None
    tail = buffer[end - 2 : end]
    stop = end - (len(tail) - len(tail.rstrip(b"=")))
    for offset in range(data_start, stop, _SCAN_CHARS):
        if buffer[offset : min(offset + _SCAN_CHARS, stop)].translate(None, _ALPHABET):
            return None
    return Base64Run(buffer, start, data_start, end)


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
