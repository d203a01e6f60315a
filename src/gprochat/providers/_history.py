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
    kept in either mode; system messages are always kept.
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
    if max_history is not None:
        messages = _last_messages(messages, max_history)
    return [{"role": "user", "parts": [{"text": format_prompt(messages)}]}]


def _last_messages(messages: Messages, max_history: int) -> Messages:
    """System messages, then the last ``max_history`` others before the final one."""
    others = [m for m in messages if m.get("role") != "system"]
    keep = {id(m) for m in others[len(others) - 1 - max_history :]} if others else set()
    return [m for m in messages if m.get("role") == "system" or id(m) in keep]
