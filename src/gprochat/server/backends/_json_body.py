"""An upstream request's JSON body, with each image's base64 written in as it is.

``json.dumps`` would copy an image's base64 twice (escaping it, then encoding the
whole body to bytes) and aiohttp would then hold the whole body while sending it: for
a 5 MiB image, three more copies of 7 MiB and ~20 ms of CPU (docs/benchmarks.md, B8).
A backend puts ``Spliced(prefix, data)`` where an image's text goes (Gemini's
``inline_data.data``, OpenAI's data URL); ``JSONBody`` serializes the rest with a
placeholder there and, when aiohttp sends it, writes the base64 (checked ASCII,
nothing to escape) in slices as the connection takes them: encoded from text, or, for
an image kept in the request body's bytes (``Image.data_span``), views of those bytes,
not copied. ``materialize`` gives the plain JSON value (for tests and logs).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import Payload

__all__ = ["JSONBody", "Spliced", "materialize"]

# Characters of base64 encoded and written at a time. Below glibc's mmap threshold
# (128 KiB): each slice reuses heap memory, where a larger one is a fresh mapping whose
# pages fault in one by one (docs/benchmarks.md, B8).
_SLICE = 64 * 1024


@dataclass(frozen=True)
class Spliced:
    """A JSON string value: ``prefix`` (any text) then ``data[start:end]`` (base64, as received).

    ``start`` and ``end`` let the base64 stay where it came (``Image.data_span``: a data
    URL, or the request body's bytes, which are written on as they are).
    """

    prefix: str
    data: str | bytes
    start: int = 0
    end: int | None = None

    @property
    def stop(self) -> int:
        return len(self.data) if self.end is None else self.end

    @property
    def base64(self) -> str:
        piece = self.data[self.start : self.stop]
        return piece.decode("ascii") if isinstance(piece, bytes) else piece

    @property
    def text(self) -> str:
        return self.prefix + self.base64


def materialize(value: Any) -> Any:
    """``value`` with every ``Spliced`` replaced by its whole string."""
    if isinstance(value, Spliced):
        return value.text
    if isinstance(value, Mapping):
        return {key: materialize(item) for key, item in value.items()}
    if isinstance(value, list):
        return [materialize(item) for item in value]
    return value


class JSONBody(Payload):
    """``body`` as ``application/json``, its ``Spliced`` values written in slices."""

    def __init__(self, body: Mapping[str, Any]) -> None:
        nonce = secrets.token_hex(8)  # no text a client sends can look like a placeholder
        spliced: list[Spliced] = []

        def placeholder(value: Any) -> str:
            if not isinstance(value, Spliced):
                raise TypeError(f"{type(value).__name__} is not JSON serializable")
            spliced.append(value)
            return f"gprochat-spliced-{nonce}-{len(spliced) - 1}"

        text = json.dumps(body, default=placeholder)
        pieces: list[bytes | Spliced] = []
        for index, value in enumerate(spliced):
            before, _, text = text.partition(f'"gprochat-spliced-{nonce}-{index}"')
            pieces.append((before + json.dumps(value.prefix)[:-1]).encode())
            pieces.append(value)
            text = '"' + text
        pieces.append(text.encode())
        self._pieces = pieces
        super().__init__(body, content_type="application/json")
        # base64 is ASCII: 1 byte a character
        self._size = sum(
            len(p) if isinstance(p, bytes) else p.stop - p.start for p in pieces
        )

    async def write(self, writer: AbstractStreamWriter) -> None:
        for piece in self._pieces:
            if isinstance(piece, bytes):
                await writer.write(piece)
                continue
            data, stop = piece.data, piece.stop
            if isinstance(data, bytes):  # the request body's bytes: written as they are
                view = memoryview(data)
                for start in range(piece.start, stop, _SLICE):
                    await writer.write(view[start : min(start + _SLICE, stop)])
                continue
            for start in range(piece.start, stop, _SLICE):
                await writer.write(data[start : min(start + _SLICE, stop)].encode("ascii"))

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return "".join(
            p.decode(encoding, errors) if isinstance(p, bytes) else p.base64
            for p in self._pieces
        )
