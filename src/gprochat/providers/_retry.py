"""Which failures are retried, how long to wait, and how many times (tenacity does the loop).

Only the opening of an answer is retried: the request up to its first piece of
text. Once text has reached the caller nothing is retried, so text is never
duplicated; the provider arranges that by yielding outside ``with_retries``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Optional, TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tenacity.stop import stop_base
from tenacity.wait import wait_exponential, wait_random

from ..errors import (
    APIStatusError,
    ConfigurationError,
    ConnectError,
    GPROChatError,
    IncompleteResponseError,
    ProxyError,
    TimeoutError,
)

__all__ = [
    "DEFAULT_MAX_RETRIES",
    "MAX_RETRY_AFTER",
    "RETRY_STATUSES",
    "is_retryable",
    "resolve_max_retries",
    "with_retries",
]

T = TypeVar("T")

logger = logging.getLogger("gprochat.retry")
logger.addHandler(logging.NullHandler())  # a library prints nothing unless asked
LONG_WAIT = 2.0
"""Waits this long or longer are logged as warnings, shorter ones as info."""

DEFAULT_MAX_RETRIES = 2
# 409: the server had already seen this signature (our server accepts each once).
# The retry is signed afresh, so it is a new request, not the same one again.
RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
MAX_RETRY_AFTER = 60.0
"""The longest ``Retry-After`` honoured; a server asking for more waits this long."""

# 0.5s, 1s, 2s ... up to 8s, each plus up to 0.25s of jitter so clients spread out.
_backoff = wait_exponential(multiplier=0.5, max=8) + wait_random(0, 0.25)


def is_retryable(exc: BaseException) -> bool:
    """Whether a failure before any text may be tried again."""
    if isinstance(exc, APIStatusError):
        if exc.status_code == 502 and "configuration error" in (exc.server_message or "").lower():
            return False  # the server says its own setup is wrong: asking again cannot help
        return exc.status_code in RETRY_STATUSES
    if isinstance(exc, TimeoutError):
        return exc.limit != "total"  # the total limit covers the retries too
    if isinstance(exc, ProxyError):
        return False  # a proxy refusing us (bad credentials, blocked host) stays refused
    if isinstance(exc, IncompleteResponseError):
        return not exc.partial_text
    return isinstance(exc, ConnectError)


def resolve_max_retries(value: Optional[int]) -> int:
    """``max_retries=``, else ``GPROCHAT_MAX_RETRIES``, else 2."""
    source = "max_retries"
    if value is None:
        raw = os.environ.get("GPROCHAT_MAX_RETRIES")
        if raw is None or not raw.strip():
            return DEFAULT_MAX_RETRIES
        source = "GPROCHAT_MAX_RETRIES"
        try:
            value = int(raw)
        except ValueError:
            value = -1
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigurationError(f"{source}={value!r} is invalid: give a whole number, 0 or more")
    return value


def _wait(state: RetryCallState) -> float:
    exc = state.outcome.exception() if state.outcome else None
    retry_after = getattr(exc, "retry_after", None)
    if isinstance(retry_after, (int, float)):
        return min(float(retry_after), MAX_RETRY_AFTER)
    return float(_backoff(state))


def _say_wait(state: RetryCallState) -> None:
    """Before each wait: say it on the "gprochat.retry" logger, so no wait is silent.

    (The command line prints these on stderr.)
    """
    exc = state.outcome.exception() if state.outcome else None
    seconds = state.next_action.sleep if state.next_action else 0.0
    retry_after = getattr(exc, "retry_after", None)
    why = (
        f"the server asked to wait (Retry-After: {retry_after:g})"
        if isinstance(retry_after, (int, float)) else "backing off"
    )
    logger.log(
        logging.WARNING if seconds >= LONG_WAIT else logging.INFO,
        "%s; retrying in %.1fs (%s)", exc, seconds, why,
    )


class _stop_past_deadline(stop_base):
    """Stop when the wait before the next attempt would end past the deadline."""

    def __init__(self, deadline: Optional[float]) -> None:
        self.deadline = deadline

    def __call__(self, retry_state: RetryCallState) -> bool:
        if self.deadline is None:
            return False
        return time.monotonic() + retry_state.upcoming_sleep >= self.deadline


async def with_retries(
    attempt: Callable[[], Awaitable[T]], *, max_retries: int, deadline: Optional[float] = None
) -> T:
    """``await attempt()``, again after retryable failures, at most ``max_retries`` more times.

    No retry starts if its wait would pass ``deadline`` (a ``time.monotonic()`` value).
    The error that ends it says how many attempts were made.
    """
    # Fast path: the first attempt runs bare. Setting up tenacity's machinery costs
    # about as much CPU as a short request itself (benchmark B1), and nearly every
    # call succeeds at once. Only a retryable first failure enters tenacity.
    try:
        return await attempt()
    except Exception as exc:
        if max_retries <= 0 or not is_retryable(exc):
            raise
        first_failure: Optional[Exception] = exc
    attempts = 1

    async def counted() -> T:
        nonlocal attempts, first_failure
        if first_failure is not None:
            # Tenacity's attempt 1 is the failure already seen: it decides the
            # wait (Retry-After or backoff) and the stop exactly as if it had run it.
            failure, first_failure = first_failure, None
            raise failure
        attempts += 1
        return await attempt()

    retrying = AsyncRetrying(
        stop=stop_after_attempt(max_retries + 1) | _stop_past_deadline(deadline),
        wait=_wait,
        retry=retry_if_exception(is_retryable),
        before_sleep=_say_wait,
        reraise=True,
    )
    try:
        return await retrying(counted)
    except GPROChatError as exc:
        if attempts > 1:
            exc.attempts = attempts
            exc.args = (f"{exc} (after {attempts} attempts)", *exc.args[1:])
        raise
