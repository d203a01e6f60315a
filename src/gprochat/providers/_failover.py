"""Failover across deployments, up to the first text, and the process's cool-down registry.

A request goes to the first deployment that is neither retired nor cooling down.
Until its first piece of text arrives, a failure moves it on to the next one:

==============================================  ==========================================
failure before the first text                   what happens to that deployment
==============================================  ==========================================
cannot connect (refused, reset, unknown host)   cools down 1s, 2s, 4s ... (at most 60s)
connect or read timeout (a stall)               the same
closed before any text                          the same
408, 409, 5xx                                   the same
429 / 503 with ``Retry-After: N``               cools down N seconds (at most 600)
401, 403 (its secret key or password is wrong)  retired for the process, said once (WARNING)
it does not offer the model asked for           skipped for this request (``_models.py``)
==============================================  ==========================================

Anything else (400, 404, 413, a bad conversation, the total timeout) is raised as it
is: another deployment would refuse it too, or the caller's time is up. After the first
text nothing fails over: a cut answer is an ``IncompleteResponseError``, never
completed by another deployment. A success clears the deployment's failure count.

``max_retries`` counts rounds: once every deployment failed or is cooling down, the
request waits until the first cool-down ends (a ``Retry-After`` is honoured that way)
and goes round again, at most ``max_retries`` times, never past the total timeout.
When none is left, ``AllDeploymentsFailedError`` names each deployment and why; when
none offers the model asked for, ``ModelNotSupportedError`` says what each one offers.

The registry is shared by every request of the process (keyed by endpoint and a digest
of the credentials), so the next request does not try a dead deployment first. Its
``clock`` can be replaced (tests move time forward without sleeping).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Optional, TypeVar

from ..errors import (
    AllDeploymentsFailedError,
    APIStatusError,
    ConnectError,
    GPROChatError,
    IncompleteResponseError,
    ModelNotSupportedError,
    TimeoutError,
)
from ._deployments import Deployment
from ._models import ModelNotOfferedError

__all__ = [
    "AnsweredBy",
    "DeploymentRegistry",
    "DeploymentState",
    "Route",
    "open_with_failover",
    "registry",
]

T = TypeVar("T")

logger = logging.getLogger("gprochat.failover")
logger.addHandler(logging.NullHandler())  # a library prints nothing unless asked

BASE_COOLDOWN = 1.0
MAX_BACKOFF = 60.0
MAX_RETRY_AFTER_COOLDOWN = 600.0
MAX_ROUND_WAIT = 60.0
"""The longest wait between two rounds (as ``MAX_RETRY_AFTER`` for a single deployment)."""

_COOLING_STATUSES = frozenset({408, 409, 429})
_RETIRING_STATUSES = frozenset({401, 403})


@dataclass
class DeploymentState:
    """What the process remembers about one deployment."""

    display: str
    failures: int = 0
    """Consecutive failures (a success resets it)."""
    cooling_until: float = 0.0
    """A ``clock()`` value; no request before it."""
    retired: Optional[str] = None
    """Why it is not used again (its credentials were refused), or ``None``."""
    last_failure: Optional[str] = None
    """A few words on its last failure ("cannot connect", "answered 429 ...")."""


@dataclass(frozen=True)
class AnsweredBy:
    """Who answered a request, given to an ``on_answer=`` callback before the first text.

    ``model`` is the deployment's declared ``model`` when it has one, else the name
    asked for (``""`` resolves to the provider's default): the GeminiProChat protocol
    does not say which model answered.
    """

    base_url: str
    model: str
    deployment: Optional[Deployment] = None


@dataclass(frozen=True)
class Route:
    """One deployment as a request uses it: its settings resolved, its registry key."""

    deployment: Deployment
    secret_key: str
    password: Optional[str]

    @property
    def key(self) -> tuple[str, str]:
        return self.deployment.key(self.secret_key, self.password)

    @property
    def display(self) -> str:
        return self.deployment.display


class DeploymentRegistry:
    """Cool-downs and retirements, by deployment, for the whole process (thread-safe).

    >>> registry = DeploymentRegistry(clock=lambda: 100.0)
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._states: dict[tuple[str, str], DeploymentState] = {}

    def state(self, route: Route) -> DeploymentState:
        """The deployment's state (a fresh one if it was never used)."""
        with self._lock:
            state = self._states.get(route.key)
            if state is None:
                state = self._states[route.key] = DeploymentState(route.display)
            return state

    def cooling_for(self, route: Route) -> float:
        """Seconds left of its cool-down (0 when it may be asked now)."""
        return max(0.0, self.state(route).cooling_until - self.clock())

    def succeeded(self, route: Route) -> None:
        state = self.state(route)
        state.failures = 0
        state.cooling_until = 0.0

    def failed(self, route: Route, reason: str, retry_after: Optional[float]) -> float:
        """Record a failure; the cool-down it gives, in seconds."""
        state = self.state(route)
        with self._lock:
            state.failures += 1
            state.last_failure = reason
            if retry_after is not None:
                seconds = min(max(retry_after, 0.0), MAX_RETRY_AFTER_COOLDOWN)
            else:
                seconds = min(BASE_COOLDOWN * 2 ** (state.failures - 1), MAX_BACKOFF)
            state.cooling_until = max(state.cooling_until, self.clock() + seconds)
        return seconds

    def retire(self, route: Route, why: str) -> bool:
        """Mark the deployment unusable; ``True`` the first time (so it is said once)."""
        state = self.state(route)
        with self._lock:
            first = state.retired is None
            state.retired = why
        return first

    def states(self) -> list[DeploymentState]:
        """Every deployment seen so far (for diagnostics)."""
        with self._lock:
            return list(self._states.values())

    def clear(self) -> None:
        """Forget everything (a retired deployment may be used again)."""
        with self._lock:
            self._states.clear()


registry = DeploymentRegistry()
"""The process's registry, used unless a call passes ``registry=``."""


def _failover_kind(exc: BaseException) -> Optional[str]:
    """``"retire"``, ``"cool"``, ``"skip"``, or ``None`` when it must be raised as it is."""
    if isinstance(exc, ModelNotOfferedError):
        return "skip"
    if isinstance(exc, APIStatusError):
        if exc.status_code in _RETIRING_STATUSES:
            return "retire"
        if exc.status_code in _COOLING_STATUSES or exc.status_code >= 500:
            return "cool"
        return None
    if isinstance(exc, TimeoutError):
        return None if exc.limit == "total" else "cool"
    if isinstance(exc, IncompleteResponseError):
        return None if exc.partial_text else "cool"
    if isinstance(exc, ConnectError):
        return "cool"
    return None


def _reason(exc: GPROChatError) -> str:
    """A few words for the all-failed message (the full error stays in ``failures``)."""
    if isinstance(exc, ModelNotOfferedError):
        return exc.why
    if isinstance(exc, APIStatusError):
        said = exc.server_message or ""
        return f"answered {exc.status_code}" + (f" {said}" if said else "")
    if isinstance(exc, TimeoutError):
        return f"{exc.limit} timeout ({exc.seconds:g}s)"
    if isinstance(exc, IncompleteResponseError):
        return "closed the connection before any text"
    if isinstance(exc, ConnectError):
        cause = exc.__cause__
        os_error = getattr(cause, "os_error", None)
        detail = getattr(os_error, "strerror", None)
        return "cannot connect" + (f" ({detail})" if detail else "")
    return str(exc)


def _all_failed(
    routes: list[Route],
    failures: dict[tuple[str, str], tuple[str, Optional[GPROChatError]]],
    reg: DeploymentRegistry,
    attempts: int,
) -> AllDeploymentsFailedError:
    listed: list[tuple[str, str, Optional[GPROChatError]]] = []
    for route in routes:
        reason, error = failures.get(route.key, ("", None))
        state = reg.state(route)
        if state.retired is not None:
            note = reason or state.retired
            reason = note if "not used again" in note else f"{note}; not used again"
        else:
            cooling = reg.cooling_for(route)
            if cooling > 0:
                reason = reason or f"{state.last_failure} earlier"
                reason += f"; cooling down {cooling:.1f}s more"
        listed.append((route.display, reason or "not tried", error))
    count = len(routes)
    what = "the deployment" if count == 1 else f"any of the {count} deployments"
    message = f"No answer from {what}: " + "; ".join(f"{url}: {why}" for url, why, _ in listed)
    if attempts > 1:
        message += f" (after {attempts} attempts)"
    error = AllDeploymentsFailedError(message, failures=listed)
    error.attempts = attempts
    return error


def _none_offers(
    routes: list[Route], skipped: dict[tuple[str, str], ModelNotOfferedError]
) -> ModelNotSupportedError:
    """No deployment offers the model: what each one offers, and the stock names."""
    first = skipped[routes[0].key]
    offered: list[str] = []
    for each in skipped.values():
        offered += [name for name in each.supported if name not in offered]
    error = ModelNotSupportedError(first.model, "these deployments", offered)
    error.args = (
        f"Model {first.model!r} is not offered by any of the {len(routes)} deployments: "
        + "; ".join(f"{route.display}: {skipped[route.key].why}" for route in routes)
        + f"; the stock names are {', '.join(first.stock)} (or pass model='' for the default)",
    )
    return error


async def open_with_failover(
    routes: list[Route],
    attempt: Callable[[Route], Awaitable[T]],
    *,
    max_retries: int,
    deadline: Optional[float],
    reg: Optional[DeploymentRegistry] = None,
) -> tuple[Route, T]:
    """``await attempt(route)`` on each usable route in turn until one succeeds.

    ``attempt`` must return only once the first text arrived (or the answer ended):
    that is where failover stops. See the module docstring for the rules.
    """
    reg = reg or registry
    failures: dict[tuple[str, str], tuple[str, Optional[GPROChatError]]] = {}
    skipped: dict[tuple[str, str], ModelNotOfferedError] = {}
    attempts = 0
    waits_left = max_retries
    last: Optional[Route] = None
    while True:
        for route in routes:
            state = reg.state(route)
            if state.retired is not None or route.key in skipped or reg.cooling_for(route) > 0:
                continue
            if last is not None:
                logger.info("trying %s", route.display)
            attempts += 1
            try:
                result = await attempt(route)
            except GPROChatError as exc:
                kind = _failover_kind(exc)
                if kind is None:
                    if attempts > 1:
                        exc.attempts = attempts
                    raise
                reason = _reason(exc)
                failures[route.key] = (reason, exc)
                if kind == "skip":
                    assert isinstance(exc, ModelNotOfferedError)
                    skipped[route.key] = exc
                    logger.info("%s %s: skipped", route.display, reason)
                elif kind == "retire":
                    why = f"{reason}: its secret key or password is wrong; not used again"
                    if reg.retire(route, why):
                        logger.warning("%s %s (this process will not use it again)",
                                       route.display, why.removesuffix("; not used again"))
                else:
                    seconds = reg.failed(route, reason, getattr(exc, "retry_after", None))
                    logger.info("%s %s; cooling it down for %.1fs", route.display, reason, seconds)
                last = route
                continue
            reg.succeeded(route)
            return route, result
        usable = [route for route in routes
                  if reg.state(route).retired is None and route.key not in skipped]
        if skipped and len(skipped) == len(routes):
            raise _none_offers(routes, skipped)
        if not usable or waits_left <= 0:
            raise _all_failed(routes, failures, reg, attempts)
        wait = min(reg.cooling_for(route) for route in usable)
        if wait > MAX_ROUND_WAIT or (deadline is not None and time.monotonic() + wait >= deadline):
            raise _all_failed(routes, failures, reg, attempts)
        waits_left -= 1
        logging.getLogger("gprochat.retry").log(
            logging.WARNING if wait >= 2.0 else logging.INFO,
            "every deployment failed or is cooling down; trying again in %.1fs", wait,
        )
        await asyncio.sleep(wait)
