"""What a refusal is, and how each route words it: the one place for both.

A ``Refusal`` is an exception a route raises (or a backend's failure becomes, in
``failures.backend_failure``) before its answer has started:

    Refusal(status, message, headers, *, code, type, param, retry_after, backend)

``message`` says what the client can do; ``code`` is a short, stable name
(``rate_limit_exceeded``, ``upstream_auth_failed``, ...; by default the status's);
``retry_after`` seconds become a ``Retry-After`` header; ``backend`` marks a failure
of the model backend rather than a refused request.

Each route words it in its own shape:

    /api/generate (and the rest)   {"error": {"message": ...}}, plus "code": "Error"
                                   for a backend's failure: GeminiProChat's body
    /v1 (the OpenAI gateway)       {"error": {"message", "type", "param", "code"}},
                                   the status an OpenAI SDK maps to its exception

The guard (``guard.py``), the replay check, the routes, the gateway and the front
door all raise or answer this one class; this module imports none of them.
"""

from __future__ import annotations

import json
import math
from typing import Any, Optional

from starlette.responses import Response

from .. import protocol

__all__ = ["BACKEND_KINDS", "Refusal", "openai_error_body"]

_OPENAI_KINDS = {
    401: ("invalid_request_error", "invalid_api_key"),
    404: ("invalid_request_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    413: ("invalid_request_error", "request_too_large"),
    429: ("rate_limit_exceeded", "rate_limit_exceeded"),
    503: ("server_error", "server_busy"),
}

#: A backend failure's kind (``failures.backend_failure``) as OpenAI's ``type`` and ``code``.
BACKEND_KINDS: dict[str, tuple[str, Optional[str]]] = {
    "invalid_request": ("invalid_request_error", None),
    "model_not_found": ("invalid_request_error", "model_not_found"),
    "rate_limited": ("rate_limit_exceeded", "rate_limit_exceeded"),
    "unavailable": ("server_error", "upstream_unavailable"),
    "timeout": ("server_error", "upstream_timeout"),
    "upstream_auth": ("server_error", "upstream_auth_failed"),
    "upstream": ("server_error", "upstream_error"),
    "internal": ("server_error", "backend_error"),
}

#: The protocol body's ``code`` for a backend's failure (a refused request has none).
BACKEND_FAILED_CODE = "Error"


class Refusal(Exception):
    """A request the server refuses, or a backend failure it answers: see the module."""

    def __init__(
        self,
        status: int,
        message: str,
        headers: Optional[dict[str, str]] = None,
        *,
        code: Optional[str] = None,
        type: Optional[str] = None,
        param: Optional[str] = None,
        retry_after: Optional[float] = None,
        backend: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.type = type
        self.param = param
        self.headers = dict(headers or {})
        self.retry_after = retry_after
        self.backend = backend
        if retry_after is not None:
            self.headers.setdefault("Retry-After", str(max(1, math.ceil(retry_after))))

    @classmethod
    def of_backend(
        cls, status: int, message: str, kind: str, *,
        retry_after: Optional[float] = None, param: Optional[str] = None,
    ) -> Refusal:
        """A backend's failure of ``kind`` (a key of ``BACKEND_KINDS``)."""
        type_, code = BACKEND_KINDS[kind]
        return cls(status, message, code=code, type=type_, param=param,
                   retry_after=retry_after, backend=True)

    def response(self, *, openai: bool) -> Response:
        """This refusal in OpenAI's shape (``openai``) or the protocol's."""
        if openai:
            body = json.dumps(self.openai_body(), ensure_ascii=False).encode()
        else:
            body = protocol.error_body(self.message, BACKEND_FAILED_CODE if self.backend else None)
        return Response(body, status_code=self.status, media_type="application/json",
                        headers=self.headers)

    def openai_body(self) -> dict[str, Any]:
        """OpenAI's ``{"error": {...}}`` (also the gateway's last event of a cut stream)."""
        return openai_error_body(self.status, self.message, type=self.type, param=self.param,
                                 code=self.code)


def openai_error_body(
    status: int,
    message: str,
    *,
    type: Optional[str] = None,
    param: Optional[str] = None,
    code: Optional[str] = None,
) -> dict[str, Any]:
    """OpenAI's ``{"error": {"message", "type", "param", "code"}}`` for ``status``.

    ``type`` and ``code`` default from the status (``server_error`` for 5xx).
    """
    default_type, default_code = _OPENAI_KINDS.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", None)
    )
    return {
        "error": {
            "message": message,
            "type": type or default_type,
            "param": param,
            "code": code or default_code,
        }
    }
