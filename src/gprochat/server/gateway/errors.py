"""The gateway's refusals in OpenAI's shape, and a backend failure written that way.

``{"error": {"message": ..., "type": ..., "param": ..., "code": ...}}`` with the status an
OpenAI SDK maps to the right exception: 400 ``BadRequestError``, 401
``AuthenticationError``, 404 ``NotFoundError``, 429 ``RateLimitError``, 5xx
``InternalServerError`` / ``APIStatusError``. ``GatewayError`` is a ``Rejected``: the
front door answers it (``server/front.py``).
"""

from __future__ import annotations

from typing import Optional

from pydantic import ValidationError
from starlette.responses import Response

from ..failures import Failure
from ..front import openai_error_response
from ..guard import Rejected

__all__ = ["GatewayError", "failure_response", "from_failure", "from_validation_error"]


class GatewayError(Rejected):
    """A refusal with OpenAI's ``type``, ``param`` and ``code``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: Optional[str] = None,
        param: Optional[str] = None,
        code: Optional[str] = None,
        headers: Optional[dict[str, str]] = None,
    ) -> None:
        super().__init__(status, message, headers)
        self.type = type
        self.param = param
        self.code = code


_KINDS = {
    "invalid_request": ("invalid_request_error", None),
    "model_not_found": ("invalid_request_error", "model_not_found"),
    "rate_limited": ("rate_limit_exceeded", "rate_limit_exceeded"),
    "unavailable": ("server_error", "upstream_unavailable"),
    "timeout": ("server_error", "upstream_timeout"),
    "upstream_auth": ("server_error", "upstream_auth_failed"),
    "upstream": ("server_error", "upstream_error"),
    "internal": ("server_error", "backend_error"),
}


def from_failure(failure: Failure) -> GatewayError:
    """A backend failure (``failures.backend_failure``) as the gateway answers it."""
    type_, code = _KINDS[failure.kind]
    return GatewayError(failure.status, failure.message, type=type_, param=failure.param,
                        code=code, headers=failure.headers)


def failure_response(failure: Failure) -> Response:
    error = from_failure(failure)
    return openai_error_response(error.status, error.message, type=error.type, param=error.param,
                                 code=error.code, headers=error.headers)


def from_validation_error(exc: ValidationError) -> GatewayError:
    """pydantic's first complaint about the body, as OpenAI's 400 naming the field."""
    error = exc.errors()[0]
    loc = [str(part) for part in error.get("loc", ())]
    param = _dotted(loc) or None
    if error.get("type") == "extra_forbidden":
        return GatewayError(400, f"Unrecognized request argument supplied: {param}", param=param)
    if error.get("type") == "missing":
        return GatewayError(400, f"Missing required parameter: {param!r}", param=param)
    if not loc:
        return GatewayError(
            400, "The request body must be a JSON object (Content-Type: application/json) "
            "with model and messages"
        )
    given = error.get("input")
    shown = f" {given!r}" if isinstance(given, (str, int, float, bool)) and len(repr(given)) < 80 else ""
    says = str(error.get("msg")).removeprefix("Value error, ")  # our own validators' words
    return GatewayError(400, f"Invalid value{shown} for {param!r}: {says}", param=param)


def _dotted(loc: list[str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if part.isdigit() else (f".{part}" if out else part)
    return out
