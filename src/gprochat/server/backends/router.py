"""The router: one Backend made of Backends, several deployments behind each model name.

A request names a model (``Conversation.model``; none: the default model). The
model's deployments are tried in the order its strategy gives (``failover``: as
declared; ``round-robin``: starting one further each request; ``least-busy``: fewest
answers in flight first), skipping those that cannot take it now: every key retired,
cooling after a failure (``_router_health``), the half-open trial already taken,
``max_concurrency`` answers in flight, ``rpm`` spent. What each failure does:

    before the first text
      key refused (401/403)        that key is retired (logged once, by its last
                                   characters); the deployment's next key is tried
      429 (Retry-After: S)         the deployment cools for S seconds; next deployment
      refused, 5xx, timed out,     the deployment cools (exponential back-off);
      no first text in time        next deployment
      the request's fault (400,    passed on at once: another deployment would refuse
      unknown model, parameters)   it too
    after the first text           passed on as it is (a cut answer), never retried
                                   elsewhere: no text is ever sent twice
    no deployment left             503 (429 when all are rate-limited) with the
                                   smallest Retry-After, naming each one's state;
                                   502 when every key of every deployment was refused

``ANSWERED_BY`` names the deployment that answered, for the access log.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import itertools
import logging
import math
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from gprochat.errors import BackendError, InvalidParameterError, ModelNotSupportedError

from ..._streams import aclose, first_text
from ._router_health import HealthStore
from .base import Backend, Conversation

__all__ = ["ANSWERED_BY", "Deployment", "RoutedModel", "RouterBackend", "Strategy", "STRATEGIES"]

logger = logging.getLogger("gprochat.server.router")

Strategy = Literal["failover", "round-robin", "least-busy"]
STRATEGIES: tuple[Strategy, ...] = ("failover", "round-robin", "least-busy")

#: The name of the deployment answering the current request (the access log reads it).
ANSWERED_BY: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar(
    "gprochat_answered_by", default=None)

#: Router events for the metrics: (deployment, "request" | "failure" | "failover"); a
#: failover is counted for the deployment that failed when the next one is tried.
EventHook = Callable[[str, str], None]


def fingerprint(key: Optional[str], index: int) -> str:
    """How a key is named in the log: its last 4 characters when it is long, else its place."""
    if key and len(key) >= 12:
        return f"...{key[-4:]}"
    return f"key #{index + 1}"


@dataclass
class _Key:
    label: str
    backend: Backend
    retired: bool = False


@dataclass
class Deployment:
    """One source of answers for a model: one backend per API key (keys rotate).

    ``kind`` is the backend's name (``gemini``); ``max_concurrency`` and ``rpm`` are
    its budgets (None: none); ``first_text_timeout``: seconds its first text may take.
    """

    name: str
    kind: str
    backends: dataclasses.InitVar[Sequence[tuple[str, Backend]]]
    max_concurrency: Optional[int] = None
    rpm: Optional[int] = None
    first_text_timeout: Optional[float] = None
    in_flight: int = 0
    keys: list[_Key] = field(default_factory=list)
    _turn: int = 0

    def __post_init__(self, backends: Sequence[tuple[str, Backend]]) -> None:
        self.keys = [_Key(label, backend) for label, backend in backends]

    @property
    def retired(self) -> bool:
        return all(key.retired for key in self.keys)

    def next_key(self) -> Optional[_Key]:
        live = [key for key in self.keys if not key.retired]
        if not live:
            return None
        key = live[self._turn % len(live)]
        self._turn += 1
        return key


@dataclass
class RoutedModel:
    """A model name clients ask for, its ``strategy`` and its ``deployments`` (in order)."""

    name: str
    deployments: list[Deployment]
    strategy: Strategy = "failover"
    _turn: itertools.count[int] = field(default_factory=itertools.count)

    def order(self) -> list[Deployment]:
        """The deployments in the order this request tries them."""
        deployments = self.deployments
        if self.strategy == "round-robin":
            start = next(self._turn) % len(deployments)
            return deployments[start:] + deployments[:start]
        if self.strategy == "least-busy":
            return sorted(deployments, key=lambda d: d.in_flight)  # stable: declared order
        return list(deployments)


@dataclass
class _Outcome:
    deployment: str
    state: str
    wait: Optional[float] = None
    rate_limited: bool = False


class RouterBackend(Backend):
    """Answers each model from its deployments, failing over before the first text.

    Example::

        RouterBackend([RoutedModel("chat", [Deployment("chat/1-echo", "echo",
            [("key #1", EchoBackend())])])], health=MemoryHealth(cooldown=5, max_cooldown=300))
    """

    name = "router"

    def __init__(
        self,
        models: Sequence[RoutedModel],
        *,
        health: HealthStore,
        default_model: Optional[str] = None,
        first_text_timeout: Optional[float] = None,
    ) -> None:
        if not models:
            raise ValueError("the router needs at least one model")
        self.routed = {model.name: model for model in models}
        self.default_model = default_model or models[0].name
        if self.default_model not in self.routed:
            raise ValueError(f"default model {self.default_model!r} is not one of the models: "
                             f"{', '.join(self.routed)}")
        self.health = health
        self.first_text_timeout = first_text_timeout
        #: Set by the app: counts requests, failures and failovers per deployment.
        self.on_event: Optional[EventHook] = None

    # -- the Backend interface --------------------------------------------------

    def models(self) -> list[str]:
        return [self.default_model, *(name for name in self.routed if name != self.default_model)]

    @property
    def status(self) -> str:
        statuses = [key.backend.status for key in self._keys()]
        if "ready" in statuses:
            return "ready"
        return "loading" if "loading" in statuses else statuses[0]

    def start(self) -> None:
        for key in self._keys():
            key.backend.on_queue_change = self.on_queue_change
            key.backend.start()

    async def aclose(self) -> None:
        try:
            for key in self._keys():
                await key.backend.aclose()
        finally:
            await self.health.aclose()

    @property
    def accepts_images(self) -> bool:  # type: ignore[override]
        """True when some deployment takes images (``check_images`` asks per model)."""
        return any(_sees_images(d) for m in self.routed.values() for d in m.deployments)

    def check_images(self, conversation: Conversation) -> None:
        """400 when the conversation holds images and no deployment of its model takes
        them; those that do are the only ones tried (``stream``)."""
        model = self.routed.get(conversation.model or self.default_model)
        if model is None or not conversation.image_count:
            return  # an unknown model is refused by stream, with the list of models
        if not any(_sees_images(d) for d in model.deployments):
            blind = ", ".join(f"{d.name} ({d.kind})" for d in model.deployments)
            raise BackendError(
                f"Model {model.name!r} cannot see images: none of its deployments ({blind}) "
                "gives them to its model. Send the message without images, or ask for a "
                "model that takes them.", status=400)

    def _keys(self) -> list[_Key]:
        return [key for model in self.routed.values() for d in model.deployments for key in d.keys]

    def _event(self, deployment: Deployment, event: str) -> None:
        if self.on_event is not None:
            self.on_event(deployment.name, event)

    # -- answering ----------------------------------------------------------------

    async def stream(self, conversation: Conversation) -> AsyncIterator[str]:
        model = self.routed.get(conversation.model or self.default_model)
        if model is None:
            raise ModelNotSupportedError(str(conversation.model), "router", self.models())
        self.check_images(conversation)
        outcomes: list[_Outcome] = []
        failed: Optional[Deployment] = None  # the last one that failed: a failover from it
        for deployment in model.order():
            if deployment.retired:
                outcomes.append(_Outcome(deployment.name, "every key refused"))
                continue
            if conversation.image_count and not _sees_images(deployment):
                outcomes.append(_Outcome(deployment.name, "cannot see images"))
                continue
            admission = await self.health.admit(deployment.name, deployment.rpm,
                                                deployment.max_concurrency)
            if not admission.ok:
                state = {"cooling": "cooling down", "trial": "testing whether it recovered",
                         "busy": "busy", "rpm": "requests-per-minute budget spent",
                         }[admission.reason]
                outcomes.append(_Outcome(deployment.name, state, admission.wait,
                                         admission.reason == "rpm"))
                continue
            if failed is not None:
                self._event(failed, "failover")
            deployment.in_flight += 1
            try:
                answer = await self._first_text(deployment, conversation, admission.trial, outcomes)
                if answer is None:
                    failed = deployment
                    continue
                first, chunks = answer
                ANSWERED_BY.set(deployment.name)
                try:
                    if first:
                        yield first
                    async for text in chunks:
                        yield text
                except Exception:
                    self._event(deployment, "failure")
                    await self.health.failed(deployment.name, None)
                    raise
                finally:
                    await aclose(chunks)
                return
            finally:
                deployment.in_flight -= 1
                if admission.lease is not None:
                    await self.health.release(deployment.name, admission.lease)
        raise _exhausted(model, outcomes)

    async def _first_text(
        self, deployment: Deployment, conversation: Conversation, trial: bool,
        outcomes: list[_Outcome],
    ) -> Optional[tuple[str, AsyncIterator[str]]]:
        """The deployment's first text and the rest, or None (then ``outcomes`` says why).

        Tries each of its live keys in turn while they are refused.
        """
        timeout = deployment.first_text_timeout or self.first_text_timeout
        verdict = False  # whether the trial (if this is one) was settled
        try:
            while (key := deployment.next_key()) is not None:
                if conversation.report is not None:
                    conversation.report.id = conversation.report.usage = None
                    conversation.report.finish_reason = None
                self._event(deployment, "request")
                chunks = key.backend.stream(dataclasses.replace(conversation, model=None)).__aiter__()
                try:
                    if timeout:
                        first = await asyncio.wait_for(first_text(chunks), timeout)
                    else:
                        first = await first_text(chunks)
                except Exception as exc:
                    await aclose(chunks)
                    if isinstance(exc, BackendError) and exc.key_rejected:
                        self._retire(deployment, key, exc)
                        continue
                    if _is_the_requests_fault(exc):
                        raise
                    self._event(deployment, "failure")
                    retry_after = exc.retry_after if isinstance(exc, BackendError) else None
                    until = await self.health.failed(deployment.name, retry_after)
                    verdict = True
                    outcomes.append(_failed(deployment, exc, until - self.health.clock()))
                    return None
                except BaseException:
                    await aclose(chunks)
                    raise
                await self.health.succeeded(deployment.name)
                verdict = True
                return first, chunks
            outcomes.append(_Outcome(deployment.name, "every key refused"))
            return None
        finally:
            if trial and not verdict:
                await self.health.abandon_trial(deployment.name)

    def _retire(self, deployment: Deployment, key: _Key, exc: BackendError) -> None:
        if key.retired:
            return  # two requests were refused the same key at once: logged by the first
        key.retired = True
        left = sum(not k.retired for k in deployment.keys)
        # Logged once: a retired key is never tried again. Never the key itself.
        logger.error("deployment %s: the upstream refused key %s (%s); retired it, %d of %d "
                     "keys left", deployment.name, key.label, exc.detail or exc.message, left,
                     len(deployment.keys))

    # -- /healthz ------------------------------------------------------------------

    async def deployments_health(self) -> list[dict[str, Any]]:
        """Each deployment's state: ``healthy``, ``cooling`` (until when), ``half-open``
        (its trial in flight), ``retired`` (every key refused); keys retired; in flight."""
        states = []
        for model in self.routed.values():
            for deployment in model.deployments:
                health = await self.health.health(deployment.name)
                state = ("retired" if deployment.retired else "cooling" if health.cooling_until
                         else "half-open" if health.failures else "healthy")
                states.append({
                    "name": deployment.name, "model": model.name, "backend": deployment.kind,
                    "state": state, "cooling_until": health.cooling_until,
                    "failures": health.failures,
                    "keys": len(deployment.keys),
                    "retired_keys": sum(key.retired for key in deployment.keys),
                    "in_flight": deployment.in_flight,
                })
        return states


def _sees_images(deployment: Deployment) -> bool:
    return any(key.backend.accepts_images for key in deployment.keys)


def _is_the_requests_fault(exc: BaseException) -> bool:
    if isinstance(exc, (InvalidParameterError, ModelNotSupportedError)):
        return True
    return isinstance(exc, BackendError) and 400 <= exc.status < 500 and exc.status not in (
        401, 403, 407, 408, 429)


def _failed(deployment: Deployment, exc: Exception, wait: float) -> _Outcome:
    if isinstance(exc, BackendError):
        what = ("rate limited" if exc.status == 429 else "timed out" if exc.status == 504
                else f"failed ({exc.status})")
        logger.warning("deployment %s %s before its first text, failing over: %s",
                       deployment.name, what, exc)
        return _Outcome(deployment.name, what, wait, exc.status == 429)
    if isinstance(exc, asyncio.TimeoutError):
        logger.warning("deployment %s gave no first text in time, failing over", deployment.name)
        return _Outcome(deployment.name, "no first text in time", wait)
    logger.error("deployment %s failed unexpectedly, failing over: %r", deployment.name, exc,
                 exc_info=exc)
    return _Outcome(deployment.name, "failed", wait)


def _exhausted(model: RoutedModel, outcomes: list[_Outcome]) -> BackendError:
    """The error when no deployment of ``model`` answered: the most useful one."""
    said = "; ".join(f"{o.deployment}: {o.state}" for o in outcomes)
    count = len(model.deployments)
    waits = [o.wait for o in outcomes if o.wait is not None]
    if not waits:
        return BackendError(
            f"server configuration error: every deployment of model {model.name!r} refused "
            "the server's keys; tell the operator", status=502, detail=said)
    retry_after = max(1, math.ceil(min(waits)))
    status = 429 if all(o.rate_limited for o in outcomes if o.wait is not None) else 503
    return BackendError(
        f"all {count} deployments of model {model.name!r} are unavailable right now ({said}); "
        f"retry in {retry_after}s", status=status, retry_after=retry_after)
