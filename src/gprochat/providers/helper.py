"""Prompt helpers with g4f's behaviour."""

from __future__ import annotations

from ..typing import Messages

__all__ = ["format_prompt"]


def format_prompt(messages: Messages, add_special_tokens: bool = False) -> str:
    """Flatten a conversation into one prompt, as g4f does.

    One message gives its content; several give ``Role: content`` lines followed by
    ``\\nAssistant:``.

    >>> format_prompt([{"role": "user", "content": "Hi"}])
    'Hi'
    >>> format_prompt([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}])
    'User: Hi\\nAssistant: Yo\\nAssistant:'
    """
    if not add_special_tokens and len(messages) <= 1:
        return str(messages[0]["content"]) if messages else ""
    lines = "\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages)
    return f"{lines}\nAssistant:"
