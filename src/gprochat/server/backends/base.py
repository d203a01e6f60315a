"""The backend interface: a conversation in, an async iterator of text out."""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from ...images import Image

__all__ = ["Turn", "AnswerReport", "Conversation", "Backend"]


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
    OpenAI gateway fills them in; ``/api/generate`` has no field for them).
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


class Backend(abc.ABC):
    """A source of model text for the server.

    Subclasses implement ``stream``; raise ``gprochat.errors.BackendError`` for
    failures (with the HTTP status the server should answer) rather than letting
    library exceptions escape. ``aclose`` releases connections on shutdown.
    """

    name: str = "backend"

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
