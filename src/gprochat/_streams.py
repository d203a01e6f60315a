"""Two small helpers for text streams, shared by the client, the server and the gateway."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

__all__ = ["aclose", "first_text"]


async def first_text(chunks: AsyncIterator[str]) -> str:
    """The first non-empty chunk, or ``""`` for an empty answer."""
    async for chunk in chunks:
        if chunk:
            return chunk
    return ""


async def aclose(iterator: AsyncIterator[Any]) -> None:
    """Close an async iterator that can be closed (an async generator); others need not."""
    close = getattr(iterator, "aclose", None)
    if close is not None:
        await close()
