"""A request body pydantic refused, as OpenAI's 400 naming the field.

OpenAI's error shape and the statuses an OpenAI SDK maps to its exceptions are
``refusals.py``'s (``Refusal.response(openai=True)``).
"""

from __future__ import annotations

from pydantic import ValidationError

from ..refusals import Refusal

__all__ = ["from_validation_error"]


def from_validation_error(exc: ValidationError) -> Refusal:
    """pydantic's first complaint about the body, as OpenAI's 400 naming the field."""
    error = exc.errors()[0]
    loc = [str(part) for part in error.get("loc", ())]
    param = _dotted(loc) or None
    if error.get("type") == "extra_forbidden":
        return Refusal(400, f"Unrecognized request argument supplied: {param}", param=param)
    if error.get("type") == "missing":
        return Refusal(400, f"Missing required parameter: {param!r}", param=param)
    if not loc:
        return Refusal(
            400, "The request body must be a JSON object (Content-Type: application/json) "
            "with model and messages"
        )
    given = error.get("input")
    shown = f" {given!r}" if isinstance(given, (str, int, float, bool)) and len(repr(given)) < 80 else ""
    says = str(error.get("msg")).removeprefix("Value error, ")  # our own validators' words
    return Refusal(400, f"Invalid value{shown} for {param!r}: {says}", param=param)


def _dotted(loc: list[str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if part.isdigit() else (f".{part}" if out else part)
    return out
