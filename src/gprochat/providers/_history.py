"""How a conversation goes on the wire: flattened into one prompt, or as native turns."""

from __future__ import annotations

from typing import Any, Optional, cast

from .. import protocol
from ..errors import ConfigurationError
from ..typing import Messages
from .helper import format_prompt

__all__ = ["HISTORY_MODES", "wire_messages"]

HISTORY_MODES = ("flatten", "native")


def wire_messages(
    messages: Messages, history: Optional[str] = None, max_history: Optional[int] = None
) -> list[dict[str, Any]]:
    """The wire's ``messages`` for a call's ``history=`` and ``max_history=``.

    ``"flatten"`` (the default, as g4f): one ``user`` message holding
    ``format_prompt`` of the conversation. ``"native"``: ``user``/``model`` turns
    (see ``protocol.native_messages``). ``max_history`` caps the earlier messages
    kept in either mode; system messages are always kept. Images in content parts
    (``image_url`` data URLs) become ``inline_data`` parts: after the prompt when
    flattened, after their turn's text when native.
    """
    mode = history or "flatten"
    if mode not in HISTORY_MODES:
        raise ConfigurationError(f"history={history!r} is invalid: use 'flatten' or 'native'")
    if max_history is not None and (
        isinstance(max_history, bool) or not isinstance(max_history, int) or max_history < 0
    ):
        raise ConfigurationError(
            f"max_history={max_history!r} is invalid: give a whole number, 0 or more"
        )
    if mode == "native":
        return protocol.native_messages(cast(list[dict[str, Any]], messages), max_history=max_history)
    # Content parts (text and images) become their text; the images follow the prompt.
    flat: Messages = []
    images: dict[int, list[dict[str, Any]]] = {}
    for index, message in enumerate(messages):
        content = message.get("content")
        if isinstance(content, list):
            text, found = protocol.message_content(content, index)
            message = {**message, "content": text}
            images[id(message)] = found
        flat.append(message)
    if max_history is not None:
        flat = _last_messages(flat, max_history)
    prompt = format_prompt(flat)
    kept = [part for message in flat for part in images.get(id(message), ())]
    return [{"role": "user", "parts": [{"text": prompt}, *kept] if prompt or not kept else kept}]


def _last_messages(messages: Messages, max_history: int) -> Messages:
    """System messages, then the last ``max_history`` others before the final one."""
    others = [m for m in messages if m.get("role") != "system"]
    keep = {id(m) for m in others[len(others) - 1 - max_history :]} if others else set()
    return [m for m in messages if m.get("role") == "system" or id(m) in keep]
