"""Every exception gprochat raises, under one root.

::

    GPROChatError
    ├── ModelNotSupportedError      (also ValueError)  unknown model name
    ├── ConfigurationError          (also ValueError)  a bad keyword argument or GPROCHAT_* variable
    ├── ProtocolError               (also ValueError)  a request or answer breaks the wire contract
    │   └── ImageError                                 an image is not base64, not a raster type, or too large
    ├── InvalidParameterError       (also ValueError)  an OpenAI-style parameter is wrong
    │   └── UnsupportedParameterError                  ... or valid, but cannot be honoured (n>1, tools)
    ├── TransportError                                 the HTTP exchange itself failed
    │   ├── ConnectError            (also ConnectionError)  refused, unknown host, proxy down
    │   │   └── ProxyError                             the proxy refused or failed
    │   ├── TimeoutError            (also builtins.TimeoutError)  connect / read / total limit
    │   └── IncompleteResponseError                    the body was cut before its end
    ├── AllDeploymentsFailedError                      no deployment of a list answered (each one's error)
    ├── APIStatusError                                 the server answered 4xx/5xx
    │   ├── BadRequestError              400
    │   ├── AuthenticationError          401
    │   │   ├── InvalidPasswordError     401 "Invalid password."
    │   │   └── InvalidSignatureError    401 "Invalid signature."
    │   ├── NotFoundError                404
    │   ├── PayloadTooLargeError         413
    │   ├── RateLimitError               429
    │   └── ServerError                  5xx
    │       └── ServiceUnavailableError  503
    ├── BackendError                                   (server side) the model backend failed
    └── SharedStateError                               (server side) Redis (replay/rate state) unreachable

Lower-level exceptions (aiohttp's, the backend's) are translated at one boundary each,
with ``raise ... from exc``, so callers only ever need to catch these.
"""

from __future__ import annotations

import builtins
from typing import Any

__all__ = [
    "GPROChatError",
    "ModelNotSupportedError",
    "ConfigurationError",
    "ProtocolError",
    "ImageError",
    "InvalidParameterError",
    "UnsupportedParameterError",
    "TransportError",
    "ConnectError",
    "ProxyError",
    "TimeoutError",
    "IncompleteResponseError",
    "AllDeploymentsFailedError",
    "APIStatusError",
    "BadRequestError",
    "AuthenticationError",
    "InvalidPasswordError",
    "InvalidSignatureError",
    "NotFoundError",
    "PayloadTooLargeError",
    "RateLimitError",
    "ServerError",
    "ServiceUnavailableError",
    "BackendError",
    "SharedStateError",
    "status_error",
]


class GPROChatError(Exception):
    """The root: ``except gprochat.GPROChatError`` catches everything this package raises.

    ``attempts`` is how many requests the client made before giving up (1 unless retried).
    """

    attempts: int = 1


class ModelNotSupportedError(GPROChatError, ValueError):
    """The model name is neither a supported model nor an alias of one."""

    def __init__(self, model: str, provider: str, supported: list[str]) -> None:
        self.model = model
        self.provider = provider
        self.supported = supported
        super().__init__(
            f"Model {model!r} is not supported by {provider}; "
            f"use one of: {', '.join(supported)} (or pass model='' for the default)"
        )


class ConfigurationError(GPROChatError, ValueError):
    """A setting is invalid: a keyword argument (``timeout=``, ``proxy=``, ``history=``...)
    or a ``GPROCHAT_*`` environment variable. The message names the setting and what it accepts."""


class ProtocolError(GPROChatError, ValueError):
    """A request or an answer does not follow the GPROChat wire contract."""


class ImageError(ProtocolError):
    """An image cannot be sent: unreadable, not strict base64, not PNG/JPEG/WebP/GIF, empty,
    declared as another type than its bytes, or over a size limit.

    ``where`` names the image (``"messages[0].parts[1]"``, a file name); ``status`` is
    the HTTP status a server answers it with (400, or 413 for a size limit).
    """

    def __init__(self, message: str, *, where: str = "image", status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.where = where
        self.status = status


class InvalidParameterError(GPROChatError, ValueError):
    """An OpenAI-style request parameter is invalid; ``param`` names it (``"messages[1].role"``)."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class UnsupportedParameterError(InvalidParameterError):
    """A parameter OpenAI accepts but GPROChat cannot honour (``n > 1``, ``tools``, ``logprobs``)."""


class TransportError(GPROChatError):
    """The HTTP exchange failed before a complete answer arrived."""

    def __init__(self, message: str, *, url: str | None = None) -> None:
        super().__init__(message)
        self.url = url


class ConnectError(TransportError, ConnectionError):
    """No connection could be made: refused port, unknown host, unreachable proxy."""


class ProxyError(ConnectError):
    """The proxy refused the request or could not reach the server."""


class TimeoutError(TransportError, builtins.TimeoutError):
    """A time limit fired. ``limit`` names which: ``"connect"``, ``"read"`` or ``"total"``."""

    def __init__(
        self, message: str, *, url: str | None = None, limit: str = "total", seconds: float = 0
    ) -> None:
        super().__init__(message, url=url)
        self.limit = limit
        self.seconds = seconds


class IncompleteResponseError(TransportError):
    """The answer's body ended before its proper end: the text received is only part of it.

    ``partial_text`` holds what had arrived: all of it from ``create_async`` /
    ``create``; from a stream, whose caller already has every chunk, the last 64 Ki
    characters (keeping all of a long answer would make memory grow with it).
    """

    def __init__(self, message: str, *, url: str | None = None, partial_text: str = "") -> None:
        super().__init__(message, url=url)
        self.partial_text = partial_text


class AllDeploymentsFailedError(GPROChatError):
    """No deployment of the list could answer (``deployments=``, ``--deployment``, a file).

    ``failures`` lists, in the order tried, ``(deployment, reason, error)``: the
    deployment's URL (without credentials), a short reason ("cannot connect", "429,
    cooling down 2s", "401 Invalid signature., not used again") and the exception it
    raised (``None`` when it was skipped: retired or still cooling down from an earlier
    request). Never raised after text was yielded: a cut answer stays an
    ``IncompleteResponseError``.
    """

    def __init__(
        self, message: str, *, failures: list[tuple[str, str, GPROChatError | None]]
    ) -> None:
        super().__init__(message)
        self.failures = failures


class APIStatusError(GPROChatError):
    """The server answered with an HTTP error status.

    Carries ``status_code``, the server's ``message`` and ``code`` (from its
    ``{"error": {...}}`` body), the raw ``body`` text, the ``url`` and, for 429/503,
    ``retry_after`` in seconds when the server sent one.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        server_message: str | None = None,
        code: Any = None,
        body: str = "",
        url: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.server_message = server_message
        self.code = code
        self.body = body
        self.url = url
        self.retry_after = retry_after


class BadRequestError(APIStatusError):
    """400: the server rejected the request as malformed."""


class AuthenticationError(APIStatusError):
    """401: wrong password or wrong signature (secret key)."""


class InvalidPasswordError(AuthenticationError):
    """401 "Invalid password.": the deployment has a site password and ours is not one of them."""


class InvalidSignatureError(AuthenticationError):
    """401 "Invalid signature.": the deployment's secret key differs from ours, or our clock is off."""


class NotFoundError(APIStatusError):
    """404: wrong base URL or endpoint."""


class PayloadTooLargeError(APIStatusError):
    """413: the conversation is larger than the server accepts."""


class RateLimitError(APIStatusError):
    """429: too many requests; ``retry_after`` says how long to wait."""


class ServerError(APIStatusError):
    """5xx: the server or its model backend failed."""


class ServiceUnavailableError(ServerError):
    """503: the server is overloaded or shutting down; ``retry_after`` says when to come back."""


class BackendError(GPROChatError):
    """Server side: the model backend failed. ``status`` is what the server answers with.

    ``message`` is what the client is told; ``detail`` is for the server's log only
    (the upstream's URL, which flag to set), never sent. ``retry_after`` is passed on
    to the client when the upstream gave one. ``key_rejected`` is true when the
    upstream refused the server's own key (401/403): the router retires that key.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int = 502,
        retry_after: float | None = None,
        detail: str | None = None,
        key_rejected: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.retry_after = retry_after
        self.detail = detail
        self.key_rejected = key_rejected

    def __str__(self) -> str:
        return f"{self.message} [{self.detail}]" if self.detail else self.message


class SharedStateError(GPROChatError):
    """Server side: the store shared by server processes (Redis) cannot be reached.

    ``operation`` says what the server was doing (``"rate limit"``, ``"replay check"``).
    """

    def __init__(self, message: str, *, operation: str) -> None:
        super().__init__(message)
        self.operation = operation


_HINTS = {
    "Invalid password.": "pass the deployment's site password with password=..., "
    "--password or GPROCHAT_PASSWORD",
    "Invalid signature.": "the deployment's secret key differs from ours (or the clock is "
    "off); pass secret_key=..., --secret-key or set GPROCHAT_SECRET_KEY",
}

_CLASSES: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    404: NotFoundError,
    413: PayloadTooLargeError,
    429: RateLimitError,
    503: ServiceUnavailableError,
}


def status_error(
    status_code: int,
    *,
    server_message: str | None,
    code: Any = None,
    body: str = "",
    url: str | None = None,
    retry_after: float | None = None,
) -> APIStatusError:
    """Map an HTTP error status and the server's message to the matching exception."""
    cls: type[APIStatusError]
    if status_code == 401 and server_message == "Invalid password.":
        cls = InvalidPasswordError
    elif status_code == 401 and server_message == "Invalid signature.":
        cls = InvalidSignatureError
    else:
        cls = _CLASSES.get(status_code) or (ServerError if status_code >= 500 else APIStatusError)
    said = server_message or (body.strip()[:200] if body.strip() else "no error message")
    message = f"{url or 'server'} answered {status_code}: {said}"
    hint = _HINTS.get(server_message or "")
    if hint:
        message += f" ({hint})"
    if retry_after is not None:
        message += f" (retry after {retry_after:g}s)"
    return cls(
        message,
        status_code=status_code,
        server_message=server_message,
        code=code,
        body=body,
        url=url,
        retry_after=retry_after,
    )
