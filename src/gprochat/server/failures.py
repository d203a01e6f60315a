"""The one place a backend's failure becomes a ``Refusal``: status, message, Retry-After.

Both routes use ``backend_failure``: ``/api/generate`` writes the result as the
protocol's error body, the gateway as OpenAI's (``refusals.BACKEND_KINDS`` gives
each kind's ``type`` and ``code``). Before any text was sent the client gets this status; after, the
connection is cut (``/api/generate``) or an error event ends the stream (``/v1``).

    our backends' BackendError                 its status (upstream 401/403 already 502)
    BackendError 401/403/407                   502: the server's credentials, not the client's
    BackendError(key_rejected=True)            its status (502), kind upstream_auth
    relay: the deployment refused our key      502 (a server configuration error)
    relay: 400 / 413                           the same status, with the deployment's words
    relay: 429 / 503                           the same status and Retry-After
    relay: 404, other statuses, cut answers    502
    relay: cannot connect                      502;  timed out: 504
    OpenAI parameters the backend refused      400 (``param`` named)
    an unknown model                           404
    anything else (a bug)                      500, details only in the server's log

Messages say what the client can do. They never carry the upstream's URL, the
operator's settings or a library's exception text: those go to the server's log.
"""

from __future__ import annotations

import logging
from typing import Literal, Optional

from ..errors import (
    APIStatusError,
    AuthenticationError,
    BackendError,
    BadRequestError,
    ConnectError,
    IncompleteResponseError,
    InvalidParameterError,
    ModelNotSupportedError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitError,
    ServiceUnavailableError,
    TimeoutError,
    TransportError,
)
from .refusals import Refusal

__all__ = ["FailureKind", "backend_failure"]

logger = logging.getLogger("gprochat.server")

FailureKind = Literal[
    "invalid_request", "model_not_found", "rate_limited", "unavailable", "timeout",
    "upstream_auth", "upstream", "internal",
]


def _fail(
    status: int, message: str, kind: FailureKind = "upstream",
    retry_after: Optional[float] = None, param: Optional[str] = None,
) -> Refusal:
    return Refusal.of_backend(status, message, kind, retry_after=retry_after, param=param)


_CREDENTIALS = (
    "The server's model backend refused the server's own credentials: a server "
    "configuration error, not yours; tell the operator."
)


def backend_failure(exc: BaseException, backend: str) -> Refusal:
    """The answer for ``exc``, raised by the backend (or the relay) named ``backend``.

    Logs the details the answer leaves out.
    """
    if isinstance(exc, BackendError):
        status = exc.status if 400 <= exc.status <= 599 else 502
        if status in (401, 403, 407):
            logger.error("backend %s refused the server's credentials: %s", backend, exc)
            return _fail(502, _CREDENTIALS, "upstream_auth")
        logger.warning("backend %s failed (%s): %s", backend, status, exc)
        kind: FailureKind = (
            "upstream_auth" if exc.key_rejected
            else "rate_limited" if status == 429 else "timeout" if status == 504
            else "unavailable" if status == 503
            else "invalid_request" if status in (400, 413) else "upstream"
        )
        return _fail(status, exc.message, kind, exc.retry_after)
    if isinstance(exc, InvalidParameterError):
        return _fail(400, exc.message, "invalid_request", param=exc.param)
    if isinstance(exc, ModelNotSupportedError):
        return _fail(404, str(exc), "model_not_found", param="model")
    relay = _relay_failure(exc)
    if relay is not None:
        logger.warning("relay %s failed: %s", backend, exc)
        return relay
    logger.error("backend %s failed unexpectedly: %r", backend, exc, exc_info=exc)
    return _fail(
        500, "The model backend failed unexpectedly; the server's log has the details.", "internal"
    )


def _relay_failure(exc: BaseException) -> Optional[Refusal]:
    # The relay is our own client talking to another deployment: its errors are written
    # for a user of the client (hints about --password, URLs), not for our clients.
    if isinstance(exc, AuthenticationError):
        return _fail(
            502,
            "The relayed GeminiProChat deployment refused this server's secret key or "
            "password: a server configuration error, not yours; tell the operator.",
            "upstream_auth",
        )
    if isinstance(exc, (BadRequestError, PayloadTooLargeError)):
        said = f": {exc.server_message}" if exc.server_message else ""
        return _fail(exc.status_code, f"The relayed deployment refused the request{said}",
                       "invalid_request")
    if isinstance(exc, RateLimitError):
        return _fail(429, "The relayed deployment is rate limiting this server; retry later.",
                       "rate_limited", exc.retry_after or 1)
    if isinstance(exc, ServiceUnavailableError):
        return _fail(503, "The relayed deployment is unavailable; retry later.", "unavailable",
                       exc.retry_after or 1)
    if isinstance(exc, NotFoundError):
        return _fail(502, "The relay address is not a GeminiProChat deployment: a server "
                       "configuration error; tell the operator.", "upstream")
    if isinstance(exc, APIStatusError):
        return _fail(502, f"The relayed deployment failed ({exc.status_code}); retry later.",
                       "upstream")
    if isinstance(exc, TimeoutError):
        return _fail(504, "The relayed deployment timed out; retry later.", "timeout")
    if isinstance(exc, ConnectError):
        return _fail(502, "This server cannot reach the deployment it relays to; retry later.",
                       "upstream")
    if isinstance(exc, IncompleteResponseError):
        return _fail(502, "The relayed deployment cut its answer short; ask again.", "upstream")
    if isinstance(exc, TransportError):
        return _fail(502, "The exchange with the relayed deployment failed; retry later.",
                       "upstream")
    return None
