"""What one-shot and interactive chats share: where to send, the conversation, one exchange."""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

from ..errors import ConnectError, GPROChatError, IncompleteResponseError
from ..images import Image
from ..log import Attachment, ConversationLog, Exchange, new_conversation_id
from ..providers import AnsweredBy, GPROChat
from ..typing import Messages

__all__ = ["Target", "Turn", "Conversation", "exchange"]


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


@dataclass(frozen=True)
class Turn:
    """One earlier exchange: the prompt, the images sent with it, the answer."""

    prompt: str
    answer: str
    images: tuple[Image, ...] = ()


@dataclass
class Conversation:
    """The turns so far and the system prompt, sent as native history (images included)."""

    id: str = field(default_factory=new_conversation_id)
    system: Optional[str] = None
    turns: list[Turn] = field(default_factory=list)
    #: Where a conversation from the log was held ("local", or the URL without credentials).
    deployment: Optional[str] = None

    @classmethod
    def from_log(
        cls, exchanges: list[Exchange], system: Optional[str], log: Optional[ConversationLog] = None
    ) -> Conversation:
        """An earlier conversation; exchanges that got no text are left out of the history.

        The images of its prompts are read back from ``log``, to be sent again.
        """
        last_system = next((e.system for e in reversed(exchanges) if e.system), None)
        return cls(
            id=exchanges[0].conversation_id,
            system=system if system is not None else last_system,
            turns=[Turn(e.prompt, e.answer, tuple(log.images(e)) if log is not None else ())
                   for e in exchanges if e.answer],
            deployment=exchanges[-1].deployment,
        )

    def messages(self, prompt: str) -> Messages:
        """The conversation and ``prompt`` as chat messages; an earlier prompt's images
        go with it as OpenAI content parts (the new prompt's go as ``images=``)."""
        messages: Messages = []
        if self.system:
            messages.append({"role": "system", "content": self.system})
        for turn in self.turns:
            if turn.images:
                parts = [{"type": "text", "text": turn.prompt}]
                parts += [image.openai_part() for image in turn.images]
                messages.append({"role": "user", "content": parts})
            else:
                messages.append({"role": "user", "content": turn.prompt})
            messages.append({"role": "assistant", "content": turn.answer})
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
    images: Sequence[Image] = (),
) -> Exchange:
    """Send ``prompt`` and its ``images`` with the conversation so far, ``write`` each
    chunk, log the outcome (the images with it).

    A cut or cancelled answer is logged as incomplete (and kept in the history when it
    has text); a failure is logged with its error. Then the failure is raised again.
    """
    record = Exchange(
        conversation_id=conversation.id,
        deployment=target.deployment,
        model=target.model_label,
        system=conversation.system,
        prompt=prompt,
        attachments=[Attachment.of(image) for image in images],
    )
    chunks: list[str] = []
    started = time.monotonic()
    failure: Optional[BaseException] = None
    options = target.options
    if "deployments" in options:

        def answered(by: AnsweredBy) -> None:  # one of several answered: log which one
            record.deployment, record.model = by.base_url, by.model

        options = {**options, "on_answer": answered}
    if images:
        options = {**options, "images": list(images)}
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
        conversation.turns.append(Turn(prompt, record.answer, tuple(images)))
    if log is not None:
        log.record(record, images)
    if failure is not None:
        raise failure
    return record
