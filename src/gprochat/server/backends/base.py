"""The backend interface: a conversation in, an async iterator of text out."""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from ...errors import BackendError
from ...images import Image

__all__ = ["Turn", "AnswerReport", "Conversation", "Backend", "InvalidOptionError"]


class InvalidOptionError(ValueError):
    """A backend option is wrong; ``option`` is its name (``safety``, ``api_key``,
    ``model_path``...), which ``gprochat serve`` turns back into the flag to name."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(message)
        self.option = option


@dataclass(frozen=True)
class Turn:
    """One earlier turn of the conversation, in Gemini's role names."""

    role: Literal["user", "model"]
    text: str
    images: tuple[Image, ...] = ()


@dataclass
class AnswerReport:
    """What a backend learned about its answer besides the text, for the gateway to pass on.

    A backend that knows them fills ``id`` (the upstream's completion id, by its first
    text), ``usage`` (token counts, OpenAI's three fields, by the end of the answer) and
    ``finish_reason`` (``"length"`` when the answer hit its token limit, ``"stop"`` when
    the model ended it; None when the backend cannot tell, which the gateway reports
    as ``"stop"``).
    """

    id: Optional[str] = None
    usage: Optional[dict[str, Any]] = None
    finish_reason: Optional[Literal["stop", "length"]] = None


@dataclass(frozen=True)
class Conversation:
    """What a backend is asked to continue.

    ``history`` holds the earlier turns (oldest first), ``message`` the new user
    message, ``images`` the images attached to it (checked, in order), ``system`` the
    server's system prompt, if any. ``model`` and the
    sampling requests (``temperature``, ``top_p``, ``max_tokens``, ``stop``, ``seed``)
    are honoured when the backend can; None means the backend's own default (the
    OpenAI gateway fills them in; ``/api/generate`` takes ``model`` and ``temperature``).
    """

    message: str
    history: tuple[Turn, ...] = ()
    images: tuple[Image, ...] = ()
    system: Optional[str] = None
    model: Optional[str] = None
    temperature: Optional[float] = None
    max_tokens: Optional[int] = None
    stop: tuple[str, ...] = field(default=())
    top_p: Optional[float] = None
    seed: Optional[int] = None
    # Where the backend reports the upstream's id and usage (the gateway reads them).
    report: Optional[AnswerReport] = field(default=None, compare=False, repr=False)

    @property
    def image_count(self) -> int:
        """The images in the whole conversation: the new message's and the history's."""
        return len(self.images) + sum(len(turn.images) for turn in self.history)


class Backend(abc.ABC):
    """A source of model text for the server.

    Subclasses implement ``stream``; raise ``gprochat.errors.BackendError`` for
    failures (with the HTTP status the server should answer) rather than letting
    library exceptions escape. ``aclose`` releases connections on shutdown.

    Images: a backend whose model is given a conversation's images says so with
    ``accepts_images = True`` (a class attribute, or a property when it depends on
    how the backend was set up). Every route calls ``check_images`` before asking a
    backend, so one that cannot see them refuses with a 400 that says why, instead of
    answering as if they were not there; ``images_refused`` words that refusal.
    """

    name: str = "backend"

    #: Whether the model is given the conversation's images (new message and history).
    accepts_images: bool = False

    #: Called with +1 / -1 as requests start and stop waiting for the backend (the
    #: app points it at its queued-requests gauge); backends without a queue never call it.
    on_queue_change: Optional[Callable[[float], None]] = None

    @property
    def status(self) -> str:
        """``"ready"``, or ``"loading"`` / ``"failed: why"`` while it cannot answer (``/healthz``)."""
        return "ready"

    def start(self) -> None:  # noqa: B027 - optional: most backends have nothing to load
        """Begin loading (a model); called once when the server starts, must not block."""

    @abc.abstractmethod
    def stream(self, conversation: Conversation) -> AsyncIterator[str]:
        """Yield the answer's text as it is produced."""

    def images_refused(self) -> str:
        """Why this backend refuses images, and what the client can do (the 400's message)."""
        return (
            f"This server's model ({self.name} backend) cannot see images: send the "
            "message without them, or ask the operator for a backend that takes images "
            "(gemini, openai with a vision model)."
        )

    def check_images(self, conversation: Conversation) -> None:
        """Raise ``BackendError`` (400) when ``conversation`` holds images this backend
        would not give its model; return when it holds none or the backend takes them."""
        if conversation.image_count and not self.accepts_images:
            raise BackendError(self.images_refused(), status=400)

    def models(self) -> list[str]:
        """The model names this backend answers to (the first is its default)."""
        return [self.name]

    def resolve(self, model: str) -> Optional[str]:
        """The listed name ``model`` stands for (``""``: the default), or None if unknown."""
        names = self.models()
        if not model:
            return names[0]
        return model if model in names else None

    async def aclose(self) -> None:  # noqa: B027 - optional: most backends hold nothing
        """Release resources (HTTP sessions); called once when the server stops."""
