"""Each deployment's health for the router: cool-downs, the half-open circuit, its budgets.

    event                                   what the deployment's state becomes
    a failure (refused, 5xx, timeout, cut)  cooling for cooldown x 2^(n-1), at most max_cooldown
                                            (n: its failures in a row)
    a 429 with Retry-After: S               cooling for exactly S seconds (no request before)
    its cool-down over                      half-open: exactly one request (the trial) passes;
                                            every other request skips it meanwhile
    the trial gives its first text          healthy: the count of failures is reset
    the trial fails                         cooling again, twice as long as before

Budgets: ``rpm`` requests started in the last 60 seconds, ``max_concurrency`` answers
in flight (each admitted request holds a lease until ``release``).

``MemoryHealth`` keeps this in the process; ``RedisHealth`` in Redis, so that every
process and host sees one deployment cooled by any of them. Both take a ``clock``
(seconds since the epoch: a cool-down's end is shared across hosts) for tests.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Optional, Protocol

from redis.exceptions import RedisError

__all__ = ["Admission", "DeploymentHealth", "HealthStore", "MemoryHealth", "RedisHealth"]

logger = logging.getLogger("gprochat.server.router")

#: Seconds of the requests-per-minute window.
_WINDOW = 60.0


@dataclass(frozen=True)
class Admission:
    """Whether a request may go to a deployment now.

    ``ok`` with ``trial`` true: the request is the half-open circuit's one trial.
    ``lease`` is to be given back to ``release`` when the request ends. Otherwise
    ``reason`` (``cooling``, ``trial``: another request is the trial, ``busy``:
    ``max_concurrency`` answers in flight, ``rpm``: the budget is spent) and ``wait``:
    seconds until that changes.
    """

    ok: bool
    trial: bool = False
    reason: Literal["", "cooling", "trial", "busy", "rpm"] = ""
    wait: float = 0.0
    lease: Optional[str] = None


@dataclass(frozen=True)
class DeploymentHealth:
    """A deployment's state for ``/healthz``: ``failures`` in a row, ``cooling_until``
    (seconds since the epoch, or None), ``trial_in_flight``."""

    failures: int
    cooling_until: Optional[float]
    trial_in_flight: bool


class HealthStore(Protocol):
    #: Seconds since the epoch (tests inject their own).
    clock: Callable[[], float]

    async def admit(self, name: str, rpm: Optional[int],
                    max_concurrency: Optional[int] = None) -> Admission: ...

    async def release(self, name: str, lease: str) -> None:
        """The admitted request ended: its place under ``max_concurrency`` is free."""
        ...

    async def failed(self, name: str, retry_after: Optional[float]) -> float:
        """Record a failure; the time (clock seconds) its cool-down ends."""
        ...

    async def succeeded(self, name: str) -> None: ...

    async def abandon_trial(self, name: str) -> None:
        """The trial ended with no verdict (the client left, the request was refused)."""
        ...

    async def health(self, name: str) -> DeploymentHealth: ...

    async def aclose(self) -> None: ...


def cooldown_seconds(failures: int, retry_after: Optional[float], cooldown: float,
                     max_cooldown: float) -> float:
    """How long a deployment cools after its ``failures``-th failure in a row."""
    if retry_after is not None:
        return max(0.0, retry_after)
    return float(min(max_cooldown, cooldown * 2 ** min(failures - 1, 62)))


class MemoryHealth:
    """The deployments' health in this process's memory."""

    def __init__(self, *, cooldown: float, max_cooldown: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.cooldown = cooldown
        self.max_cooldown = max_cooldown
        self.clock = clock
        self._failures: dict[str, int] = {}
        self._until: dict[str, float] = {}
        self._trials: set[str] = set()
        self._starts: dict[str, deque[float]] = {}
        self._in_flight: dict[str, int] = {}

    async def admit(self, name: str, rpm: Optional[int],
                    max_concurrency: Optional[int] = None) -> Admission:
        now = self.clock()
        trial = False
        if self._failures.get(name):
            until = self._until.get(name, 0.0)
            if now < until:
                return Admission(False, reason="cooling", wait=until - now)
            if name in self._trials:
                return Admission(False, reason="trial", wait=1.0)
            trial = True
        if max_concurrency and self._in_flight.get(name, 0) >= max_concurrency:
            return Admission(False, reason="busy", wait=1.0)
        if rpm:
            starts = self._starts.setdefault(name, deque())
            while starts and starts[0] <= now - _WINDOW:
                starts.popleft()
            if len(starts) >= rpm:
                return Admission(False, reason="rpm", wait=starts[0] + _WINDOW - now)
            starts.append(now)
        if trial:
            self._trials.add(name)
        self._in_flight[name] = self._in_flight.get(name, 0) + 1
        return Admission(True, trial=trial, lease="1")

    async def release(self, name: str, lease: str) -> None:
        self._in_flight[name] -= 1

    async def failed(self, name: str, retry_after: Optional[float]) -> float:
        failures = self._failures[name] = self._failures.get(name, 0) + 1
        until = self.clock() + cooldown_seconds(failures, retry_after, self.cooldown, self.max_cooldown)
        self._until[name] = max(until, self._until.get(name, 0.0))
        self._trials.discard(name)
        return self._until[name]

    async def succeeded(self, name: str) -> None:
        self._failures.pop(name, None)
        self._until.pop(name, None)
        self._trials.discard(name)

    async def abandon_trial(self, name: str) -> None:
        self._trials.discard(name)

    async def health(self, name: str) -> DeploymentHealth:
        until = self._until.get(name)
        cooling = until if until is not None and until > self.clock() else None
        return DeploymentHealth(self._failures.get(name, 0), cooling, name in self._trials)

    async def aclose(self) -> None:
        pass


# One round trip each, atomic across processes. KEYS: the state hash, the trial key, the
# rpm window (a sorted set of request starts), the leases (a sorted set: expiry by lease).
_ADMIT = """
local failures = tonumber(redis.call('HGET', KEYS[1], 'failures') or '0')
local till = tonumber(redis.call('HGET', KEYS[1], 'until') or '0')
local now = tonumber(ARGV[1])
local trial = 0
if failures > 0 and now < till then return {'cooling', tostring(till - now)} end
local most = tonumber(ARGV[5])
if most > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
  if redis.call('ZCARD', KEYS[4]) >= most then return {'busy', '1'} end
end
if failures > 0 then
  if not redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[3]) then return {'trial', '1'} end
  trial = 1
end
local rpm = tonumber(ARGV[2])
if rpm > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - 60)
  if redis.call('ZCARD', KEYS[3]) >= rpm then
    if trial == 1 then redis.call('DEL', KEYS[2]) end
    local oldest = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
    return {'rpm', tostring(tonumber(oldest[2]) + 60 - now)}
  end
  redis.call('ZADD', KEYS[3], now, ARGV[4])
  redis.call('EXPIRE', KEYS[3], 61)
end
if most > 0 then
  redis.call('ZADD', KEYS[4], now + tonumber(ARGV[6]), ARGV[4])
  redis.call('EXPIRE', KEYS[4], math.ceil(tonumber(ARGV[6])) + 1)
end
return {'ok', tostring(trial)}
"""

_FAILED = """
local n = redis.call('HINCRBY', KEYS[1], 'failures', 1)
local cool = tonumber(ARGV[2])
if cool < 0 then
  cool = math.min(tonumber(ARGV[4]), tonumber(ARGV[3]) * 2 ^ math.min(n - 1, 62))
end
local till = tonumber(ARGV[1]) + cool
local old = tonumber(redis.call('HGET', KEYS[1], 'until') or '0')
if till > old then redis.call('HSET', KEYS[1], 'until', tostring(till)) else till = old end
redis.call('EXPIRE', KEYS[1], 86400)
redis.call('DEL', KEYS[2])
return tostring(till)
"""


class RedisHealth:
    """The deployments' health in Redis, shared by every process and host.

    When Redis does not answer, a deployment counts as healthy (logged): the router
    keeps answering, as each process's own attempts still fail over.
    """

    def __init__(self, redis_url: str, *, cooldown: float, max_cooldown: float,
                 trial_timeout: float = 120.0, lease_timeout: float = 600.0,
                 clock: Callable[[], float] = time.time) -> None:
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        from ..stores import REDIS_TIMEOUT

        self.cooldown = cooldown
        self.max_cooldown = max_cooldown
        self.clock = clock
        #: A trial whose process died is given up after this long.
        self.trial_timeout = trial_timeout
        #: A lease whose process died (or whose answer runs longer) frees its place then.
        self.lease_timeout = lease_timeout
        self._client: Any = aioredis.Redis.from_url(
            redis_url, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT,
            retry=Retry(NoBackoff(), 0),
        )
        self._admit = self._client.register_script(_ADMIT)
        self._failed = self._client.register_script(_FAILED)

    @staticmethod
    def _keys(name: str) -> list[str]:
        base = f"gprochat:router:{name}"
        return [f"{base}:state", f"{base}:trial", f"{base}:rpm", f"{base}:leases"]

    async def admit(self, name: str, rpm: Optional[int],
                    max_concurrency: Optional[int] = None) -> Admission:
        now = self.clock()
        lease = f"{now!r}:{uuid.uuid4().hex}"
        args: list[str | int | float] = [
            repr(now), rpm or 0, int(self.trial_timeout * 1000), lease, max_concurrency or 0,
            self.lease_timeout]
        try:
            verdict, value = await self._admit(keys=self._keys(name), args=args)
        except (RedisError, OSError) as exc:  # fail open
            _redis_down(exc)
            return Admission(True)
        verdict = verdict.decode() if isinstance(verdict, bytes) else str(verdict)
        number = float(value)
        if verdict == "ok":
            return Admission(True, trial=number == 1, lease=lease if max_concurrency else None)
        reason: Literal["cooling", "trial", "busy", "rpm"] = (
            "cooling" if verdict == "cooling" else "trial" if verdict == "trial"
            else "busy" if verdict == "busy" else "rpm")
        return Admission(False, reason=reason, wait=number)

    async def release(self, name: str, lease: str) -> None:
        try:
            await self._client.zrem(self._keys(name)[3], lease)
        except (RedisError, OSError) as exc:
            _redis_down(exc)

    async def failed(self, name: str, retry_after: Optional[float]) -> float:
        keys = self._keys(name)[:2]
        args: list[str | int | float] = [
            repr(self.clock()), -1 if retry_after is None else retry_after, self.cooldown,
            self.max_cooldown]
        try:
            return float(await self._failed(keys=keys, args=args))
        except (RedisError, OSError) as exc:
            _redis_down(exc)
            return self.clock()

    async def succeeded(self, name: str) -> None:
        await self._delete(*self._keys(name)[:2])

    async def abandon_trial(self, name: str) -> None:
        await self._delete(self._keys(name)[1])

    async def _delete(self, *keys: str) -> None:
        try:
            await self._client.delete(*keys)
        except (RedisError, OSError) as exc:
            _redis_down(exc)

    async def health(self, name: str) -> DeploymentHealth:
        state_key, trial_key = self._keys(name)[:2]
        try:
            state = await self._client.hgetall(state_key)
            trial = bool(await self._client.exists(trial_key))
        except (RedisError, OSError) as exc:
            _redis_down(exc)
            return DeploymentHealth(0, None, False)
        until = float(state.get(b"until", 0))
        return DeploymentHealth(int(state.get(b"failures", 0)),
                                until if until > self.clock() else None, trial)

    async def aclose(self) -> None:
        await self._client.aclose()


def _redis_down(exc: BaseException) -> None:
    logger.warning("the router cannot reach Redis for deployment health (%s); counting "
                   "deployments as healthy meanwhile", exc)
