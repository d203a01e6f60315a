"""Where replay and rate-limit state lives: this process's memory, or Redis.

With ``--redis-url`` every server process behind a load balancer sees the same used
signatures and the same request counts. Redis errors are translated here, at one
boundary, into ``SharedStateError``; the guard decides whether to fail open or closed.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any, Protocol

import redis.asyncio as aioredis
from limits.aio.storage import RedisStorage, Storage
from limits.errors import StorageError
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from ..errors import SharedStateError

__all__ = [
    "REDIS_TIMEOUT",
    "MemoryReplayStore",
    "RedisReplayStore",
    "ReplayStore",
    "SharedState",
]

#: Seconds a Redis command may take before the server treats Redis as unreachable:
#: short, because a request waits for it.
REDIS_TIMEOUT = 1.0
_KEY_PREFIX = "gprochat"


class ReplayStore(Protocol):
    """Remembers signatures: ``claim`` is true only the first time within ``ttl``."""

    async def claim(self, key: str, ttl: float) -> bool: ...


class MemoryReplayStore:
    """Used signatures in this process's memory, forgotten after their ``ttl``."""

    def __init__(self) -> None:
        # key -> expiry (monotonic). Entries are purged from the oldest; with one ttl
        # for all (the guard's), insertion order is expiry order.
        self._seen: OrderedDict[str, float] = OrderedDict()

    async def claim(self, key: str, ttl: float) -> bool:
        now = time.monotonic()
        while self._seen:
            oldest, expiry = next(iter(self._seen.items()))
            if expiry > now:
                break
            del self._seen[oldest]
        previous = self._seen.get(key)
        if previous is not None and previous > now:
            return False
        self._seen[key] = now + ttl
        self._seen.move_to_end(key)
        return True

    def __len__(self) -> int:
        return len(self._seen)


class RedisReplayStore:
    """Used signatures in Redis: ``SET key 1 NX PX ttl`` is atomic across processes."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._client = client

    async def claim(self, key: str, ttl: float) -> bool:
        try:
            created = await self._client.set(
                f"{_KEY_PREFIX}:replay:{key}", b"1", nx=True, px=max(1, int(ttl * 1000))
            )
        except (RedisError, OSError) as exc:
            raise SharedStateError(f"Redis failed during the replay check: {exc}",
                                   operation="replay check") from exc
        return bool(created)


class SharedState:
    """The stores for one app: memory by default, Redis when ``redis_url`` is given.

    ``replay`` is a ``ReplayStore``; ``rate_storage`` a ``limits`` storage for the rate
    limiter with Redis (``None`` in memory: the guard keeps its own window, see
    ``guard.MemoryMovingWindow``). ``ping()`` says whether Redis answers (``None``
    without Redis).
    """

    def __init__(self, redis_url: str | None = None) -> None:
        self.redis_url = redis_url
        self._client: aioredis.Redis | None = None
        self.rate_storage: Storage | None = None
        self.replay: ReplayStore
        if redis_url is None:
            self.replay = MemoryReplayStore()
            return
        options: dict[str, Any] = {
            "socket_timeout": REDIS_TIMEOUT,
            "socket_connect_timeout": REDIS_TIMEOUT,
            # No retries: a request should not wait several timeouts for a dead Redis.
            "retry": Retry(NoBackoff(), 0),
        }
        self._client = aioredis.Redis.from_url(redis_url, **options)
        self.replay = RedisReplayStore(self._client)
        self.rate_storage = RedisStorage(
            "async+" + redis_url,
            implementation="redispy",
            wrap_exceptions=True,
            key_prefix=f"{_KEY_PREFIX}:rate",
            **options,
        )

    @property
    def backend_name(self) -> str:
        return "redis" if self.redis_url else "memory"

    async def ping(self) -> bool | None:
        """True when Redis answers, False when it does not, None without Redis."""
        if self._client is None:
            return None
        try:
            return bool(await self._client.ping())
        except (RedisError, OSError):
            return False

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()


def translate_rate_storage_error(exc: BaseException) -> SharedStateError | None:
    """A ``SharedStateError`` for a rate-limit storage failure, else ``None``."""
    if isinstance(exc, (StorageError, RedisError, OSError)):
        cause = exc.storage_error if isinstance(exc, StorageError) else exc
        return SharedStateError(f"Redis failed during the rate-limit check: {cause}",
                                operation="rate limit")
    return None
