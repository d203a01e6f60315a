"""An OpenAI request as the ``Conversation`` every backend continues, and its model's name.

The server has one backend (``app.state.backend``): its own model, a router over
several deployments, or another GeminiProChat deployment (``RelayBackend``, chosen by
``--relay-url``); the gateway asks it as ``/api/generate`` does. Messages are already
normalised by ``gprochat.openai.params``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, Optional, Protocol

from ...images import Image
from ..backends import AnswerReport, Backend, Conversation, Turn
from ..refusals import Refusal

__all__ = ["SamplingOptions", "resolve_model", "to_conversation"]


class SamplingOptions(Protocol):
    temperature: Optional[float]
    max_tokens: Optional[int]
    max_completion_tokens: Optional[int]
    stop: Any
    top_p: Optional[float]
    seed: Optional[int]


def resolve_model(backend: Backend, model: str) -> str:
    """The listed name ``model`` stands for (``""``: the default), or a 404 naming them."""
    resolved = backend.resolve(model)
    if resolved is not None:
        return resolved
    known = backend.models()
    raise Refusal(
        404,
        f"The model {model!r} does not exist on this gateway; use one of: "
        f"{', '.join(known)} (GET /v1/models lists them), or \"\" for the default ({known[0]})",
        param="model",
        code="model_not_found",
    )


def to_conversation(
    model: str,
    messages: list[dict[str, str]],
    options: SamplingOptions,
    *,
    system_prompt: Optional[str] = None,
    report: Optional[AnswerReport] = None,
    images: Optional[Sequence[tuple[Image, ...]]] = None,
) -> Conversation:
    """System messages joined (after the server's prompt); the rest as Gemini turns.

    ``images`` holds each message's checked images (``images.check_images``), in the
    order of ``messages``; only user messages have any.
    """
    systems = [system_prompt] if system_prompt else []
    systems += [m["content"] for m in messages if m["role"] == "system"]
    turns: list[Turn] = []
    for index, message in enumerate(messages):
        if message["role"] == "system":
            continue
        role: Literal["user", "model"] = "user" if message["role"] == "user" else "model"
        pictures = images[index] if images else ()
        if turns and turns[-1].role == role:
            # Gemini wants alternating turns: merge a run of one role (and its images).
            last = turns[-1]
            turns[-1] = Turn(role, last.text + "\n\n" + message["content"], last.images + pictures)
        else:
            turns.append(Turn(role, message["content"], pictures))
    stop = options.stop
    return Conversation(
        message=turns[-1].text,
        history=tuple(turns[:-1]),
        images=turns[-1].images,
        system="\n\n".join(systems) or None,
        model=model,
        temperature=options.temperature,
        max_tokens=options.max_completion_tokens or options.max_tokens,
        stop=(stop,) if isinstance(stop, str) else tuple(stop or ()),
        top_p=options.top_p,
        seed=options.seed,
        report=report,
    )
