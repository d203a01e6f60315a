"""An OpenAI request as the ``Conversation`` every backend continues, and its model's name.

The server has one backend (``app.state.backend``): its own model, a router over
several deployments, or another GeminiProChat deployment (``RelayBackend``, chosen by
``--relay-url``); the gateway asks it as ``/api/generate`` does. Messages are already
normalised by ``gprochat.openai.params``.
"""

from __future__ import annotations

from typing import Any, Literal, Optional, Protocol

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
) -> Conversation:
    """System messages joined (after the server's prompt); the rest as Gemini turns."""
    systems = [system_prompt] if system_prompt else []
    systems += [m["content"] for m in messages if m["role"] == "system"]
    turns: list[Turn] = []
    for message in messages:
        if message["role"] == "system":
            continue
        role: Literal["user", "model"] = "user" if message["role"] == "user" else "model"
        if turns and turns[-1].role == role:
            # Gemini wants alternating turns: merge a run of one role.
            turns[-1] = Turn(role, turns[-1].text + "\n\n" + message["content"])
        else:
            turns.append(Turn(role, message["content"]))
    stop = options.stop
    return Conversation(
        message=turns[-1].text,
        history=tuple(turns[:-1]),
        system="\n\n".join(systems) or None,
        model=model,
        temperature=options.temperature,
        max_tokens=options.max_completion_tokens or options.max_tokens,
        stop=(stop,) if isinstance(stop, str) else tuple(stop or ()),
        top_p=options.top_p,
        seed=options.seed,
        report=report,
    )
