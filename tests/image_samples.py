"""Small real images for the image tests (built here, so no binary file is checked in)."""

from __future__ import annotations

import base64
import hashlib
import struct
import zlib


def png(width: int = 4, height: int = 3, seed: int = 0) -> bytes:
    """A valid RGB PNG whose pixels depend on ``seed`` (so two seeds differ)."""

    def block(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(
        b"\x00" + bytes((x * 40 + y * 7 + seed) % 256 for x in range(width * 3)) for y in range(height)
    )
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunks = block(b"IHDR", header) + block(b"IDAT", zlib.compress(rows)) + block(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


def jpeg(seed: int = 0) -> bytes:
    """Bytes a JPEG's magic numbers announce (only the type is read from them)."""
    return b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(seed, seed + 64)) + b"\xff\xd9"


SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'


def data_url(raw: bytes, mime_type: str = "image/png") -> str:
    return f"data:{mime_type};base64,{base64.b64encode(raw).decode()}"


def described(raw: bytes, mime_type: str = "image/png") -> str:
    """What the echo backend says of an image: ``image/png, 1234 bytes, sha256 <hex>``."""
    return f"{mime_type}, {len(raw)} bytes, sha256 {hashlib.sha256(raw).hexdigest()}"
