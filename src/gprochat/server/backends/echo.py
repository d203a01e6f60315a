"""The embedded offline backend: no key, no network, deterministic."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

from .base import Backend, Conversation

__all__ = ["EchoBackend"]

_WORD = re.compile(r"\S+\s*|\s+")


class EchoBackend(Backend):
    """Answers with the user's last message verbatim, a few words per chunk.

    ``delay`` paces the chunks (seconds between two), for tests and benchmarks;
    ``words_per_chunk`` sets their size; ``repeat`` sends the echoed message that
    many times, for long answers.
    """

    name = "echo"
    accepts_images = True  # described, not seen: enough to prove they arrived intact
    PREFIX = "Echo from the built-in echo backend (no model behind it): "

    def __init__(self, *, delay: float = 0.0, words_per_chunk: int = 2, repeat: int = 1) -> None:
        if delay < 0 or words_per_chunk < 1 or repeat < 1:
            raise ValueError("delay must be >= 0, words_per_chunk and repeat >= 1")
        self.delay = delay
        self.words_per_chunk = words_per_chunk
        self.repeat = repeat

    def reply(self, conversation: Conversation) -> str:
        """The whole answer, as ``stream`` sends it.

        Each image of the new message is described on a line of its own after the text
        (``[image 1: image/png, 1234 bytes, sha256 <hex>]``), so a test can prove the
        bytes arrived intact.
        """
        seen = "".join(
            f"\n[image {number}: {image.describe()}]"
            for number, image in enumerate(conversation.images, 1)
        )
        return self.PREFIX + conversation.message * self.repeat + seen

    async def stream(self, conversation: Conversation) -> AsyncIterator[str]:
        words = _WORD.findall(self.reply(conversation))
        step = self.words_per_chunk
        for index in range(0, len(words), step):
            if index and self.delay:
                await asyncio.sleep(self.delay)
            yield "".join(words[index : index + step])
