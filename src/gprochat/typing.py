"""Type aliases shared by the providers, the client and the CLI (g4f-compatible names)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator
from typing import Any, Literal, TypedDict, Union

__all__ = ["Message", "Messages", "AsyncResult", "CreateResult", "Role"]

Role = Literal["system", "user", "assistant"]


class Message(TypedDict):
    """One chat message as g4f and OpenAI write it: ``{"role": "user", "content": "Hi"}``."""

    role: str
    content: str


Messages = list[Union[Message, dict[str, Any]]]
"""A conversation: a list of ``{"role": ..., "content": ...}`` dicts, oldest first."""

AsyncResult = AsyncGenerator[str, None]
"""What ``create_async_generator`` returns: text chunks as they arrive."""

CreateResult = Generator[str, None, None]
"""What ``create_completion`` returns: the same chunks, for synchronous code."""
