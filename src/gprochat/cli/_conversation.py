"""What one-shot and interactive chats share: where to send, the conversation, one exchange."""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Optional

from ..errors import ConnectError, GPROChatError, IncompleteResponseError
from ..log import ConversationLog, Exchange, new_conversation_id
from ..providers import AnsweredBy, GPROChat
from ..typing import Messages

__all__ = ["Target", "Conversation", "exchange"]


@dataclass
class Target:
    """Where the prompts go: the provider's keyword arguments and how the log names it."""

    model: str
    deployment: str
    options: dict[str, Any]
    #: The model that really answers, when known (``--local``: the bundled server's);
    #: recorded in the log instead of ``model``, which the protocol does not send.
    served_model: str = ""

    @property
    def model_label(self) -> str:
        return self.served_model or self.model or GPROChat.default_model

    def explain(self, error: GPROChatError) -> str:
        """The error's one line, with what to do when the default deployment is unreachable."""
        if isinstance(error, ConnectError) and not {"base_url", "deployments"} & set(self.options):
            return (f"{error}; gprochat.com, the default deployment, is gone: pass --base-url "
                    "(or set GPROCHAT_BASE_URL) to a GeminiProChat deployment, or --local to "
                    "chat with the bundled model")
        return str(error)


@dataclass
class Conversation:
    """The turns so far (prompt, answer) and the system prompt, sent as native history."""

    id: str = field(default_factory=new_conversation_id)
    system: Optional[str] = None
    turns: list[tuple[str, str]] = field(default_factory=list)
    #: Where a conversation from the log was held ("local", or the URL without credentials).
    deployment: Optional[str] = None

    @classmethod
    def from_log(cls, exchanges: list[Exchange], system: Optional[str]) -> Conversation:
        """An earlier conversation; exchanges that got no text are left out of the history."""
        last_system = next((e.system for e in reversed(exchanges) if e.system), None)
        return cls(
            id=exchanges[0].conversation_id,
            system=system if system is not None else last_system,
            turns=[(e.prompt, e.answer) for e in exchanges if e.answer],
            deployment=exchanges[-1].deployment,
        )

    def messages(self, prompt: str) -> Messages:
        messages: Messages = []
        if self.system:
            messages.append({"role": "system", "content": self.system})
        for asked, answered in self.turns:
            messages.append({"role": "user", "content": asked})
            messages.append({"role": "assistant", "content": answered})
        messages.append({"role": "user", "content": prompt})
        return messages


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


async def exchange(
    target: Target,
    conversation: Conversation,
    prompt: str,
    write: Callable[[str], None],
    log: Optional[ConversationLog],
) -> Exchange:
    """Send ``prompt`` with the conversation so far, ``write`` each chunk, log the outcome.

    A cut or cancelled answer is logged as incomplete (and kept in the history when it
    has text); a failure is logged with its error. Then the failure is raised again.
    """
    record = Exchange(
        conversation_id=conversation.id,
        deployment=target.deployment,
        model=target.model_label,
        system=conversation.system,
        prompt=prompt,
    )
    chunks: list[str] = []
    started = time.monotonic()
    failure: Optional[BaseException] = None
    options = target.options
    if "deployments" in options:

        def answered(by: AnsweredBy) -> None:  # one of several answered: log which one
            record.deployment, record.model = by.base_url, by.model

        options = {**options, "on_answer": answered}
    try:
        async for chunk in GPROChat.create_async_generator(
            target.model, conversation.messages(prompt), **options
        ):
            chunks.append(chunk)
            write(chunk)
    except asyncio.CancelledError as exc:  # Ctrl-C: the generator has cut the connection
        record.incomplete = True
        failure = exc
    except GPROChatError as exc:
        record.incomplete = isinstance(exc, IncompleteResponseError)
        record.error = str(exc)
        failure = exc
    record.answer = "".join(chunks)
    record.finished = _now()
    record.duration_ms = round((time.monotonic() - started) * 1000)
    if record.answer:
        conversation.turns.append((prompt, record.answer))
    if log is not None:
        log.record(record)
    if failure is not None:
        raise failure
    return record
