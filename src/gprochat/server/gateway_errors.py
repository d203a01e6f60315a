"""The gateway's errors in OpenAI's shape, and the one place upstream failures become them.

``{"error": {"message": ..., "type": ..., "param": ..., "code": ...}}`` with the status an
OpenAI SDK maps to the right exception: 400 ``BadRequestError``, 401
``AuthenticationError``, 404 ``NotFoundError``, 429 ``RateLimitError``, 5xx
``InternalServerError`` / ``APIStatusError``.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any, Optional

from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response

from ..errors import (
    APIStatusError,
    AuthenticationError,
    BackendError,
    BadRequestError,
    GPROChatError,
    InvalidParameterError,
    ModelNotSupportedError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitError,
    ServiceUnavailableError,
    TimeoutError,
    TransportError,
)

__all__ = ["GatewayError", "from_rejection", "from_validation_error", "from_upstream_error"]

logger = logging.getLogger("gprochat.server.gateway")


class GatewayError(Exception):
    """An error the gateway answers with; ``response()`` is its HTTP form."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: Optional[str] = None,
        code: Optional[str] = None,
        retry_after: Optional[float] = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self) -> Response:
        headers = {}
        if self.retry_after is not None:
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after)))
        if self.status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        return Response(
            json.dumps(self.body(), ensure_ascii=False),
            status_code=self.status,
            media_type="application/json",
            headers=headers,
        )


def from_validation_error(exc: RequestValidationError) -> GatewayError:
    """FastAPI's 422 becomes OpenAI's 400, naming the first offending field."""
    error = exc.errors()[0]
    loc = [str(part) for part in error.get("loc", ()) if part != "body"]
    param = _dotted(loc) or None
    if error.get("type") == "json_invalid":
        detail = (error.get("ctx") or {}).get("error", "invalid JSON")
        return GatewayError(
            400, f"The request body is not valid JSON ({detail}); send a JSON object "
            "with model and messages"
        )
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
    shown = f" {given!r}" if isinstance(given, (str, int, float, bool)) else ""
    return GatewayError(
        400, f"Invalid value{shown} for {param!r}: {error.get('msg')}", param=param
    )


def _dotted(loc: list[str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if part.isdigit() else (f".{part}" if out else part)
    return out


def from_upstream_error(exc: BaseException, *, relay: bool) -> GatewayError:
    """The gateway's answer for a failure of the backend or of the relayed deployment."""
    if isinstance(exc, GatewayError):
        return exc
    if isinstance(exc, InvalidParameterError):
        return GatewayError(400, exc.message, param=exc.param)
    if isinstance(exc, ModelNotSupportedError):
        return GatewayError(404, str(exc), param="model", code="model_not_found")
    if isinstance(exc, BackendError):
        return _from_status(exc.status, exc.message, exc.retry_after)
    if isinstance(exc, AuthenticationError):
        # The client's key was fine: it is the gateway's relay settings that are wrong.
        return GatewayError(
            502, f"The relayed GPROChat deployment refused the gateway's credentials "
            f"(check --relay-secret-key / --relay-password): {exc}",
            type="server_error", code="upstream_auth_failed",
        )
    if isinstance(exc, (BadRequestError, PayloadTooLargeError)):
        return GatewayError(exc.status_code, f"The upstream refused the request: "
                            f"{exc.server_message or exc}")
    if isinstance(exc, (RateLimitError, ServiceUnavailableError)):
        return _from_status(exc.status_code, str(exc), exc.retry_after or 1)
    if isinstance(exc, NotFoundError):
        return GatewayError(502, f"The relay URL looks wrong: {exc}", type="server_error",
                            code="upstream_error")
    if isinstance(exc, TimeoutError):
        return GatewayError(504, f"The upstream timed out: {exc}", type="server_error",
                            code="upstream_timeout")
    if isinstance(exc, (APIStatusError, TransportError, GPROChatError)):
        return GatewayError(502, f"The upstream failed: {exc}", type="server_error",
                            code="upstream_error")
    logger.error("the %s failed unexpectedly", "relay" if relay else "backend", exc_info=exc)
    return GatewayError(500, f"The model backend failed: {exc!r}", type="server_error",
                        code="backend_error")


def _from_status(status: int, message: str, retry_after: Optional[float]) -> GatewayError:
    if status == 429:
        return GatewayError(429, message, type="rate_limit_exceeded",
                            code="rate_limit_exceeded", retry_after=retry_after or 1)
    if status >= 500:
        return GatewayError(status, message, type="server_error", code="upstream_error",
                            retry_after=retry_after if status == 503 else None)
    return GatewayError(status, message)


_REJECTION_KINDS = {
    413: ("invalid_request_error", "request_too_large"),
    429: ("rate_limit_exceeded", "rate_limit_exceeded"),
    503: ("server_error", "server_busy"),
}


def from_rejection(status: int, message: str, headers: dict[str, str]) -> GatewayError:
    """The server guard's refusal (size, rate, busy) in OpenAI's shape."""
    type_, code = _REJECTION_KINDS.get(status, ("invalid_request_error", None))
    retry_after = headers.get("Retry-After")
    return GatewayError(
        status, message, type=type_, code=code,
        retry_after=float(retry_after) if retry_after else None,
    )
