"""Where replay and rate-limit state lives: this process's memory, or Redis.

With ``--redis-url`` every server process behind a load balancer sees the same used
signatures and the same request counts. Redis errors are translated here, at one
boundary, into ``SharedStateError``; the guard decides whether to fail open or closed.
"""

from __future__ import annotations

import mmap
import time
from collections.abc import Callable
from hashlib import blake2b
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
    "ReplayStoreFull",
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


class ReplayStoreFull(Exception):
    """``MemoryReplayStore`` holds ``max_entries`` signatures: none can be added now.

    ``retry_after`` is how many seconds until the oldest ones are forgotten.
    """

    def __init__(self, max_entries: int, retry_after: float) -> None:
        super().__init__(f"the replay store holds its maximum of {max_entries} signatures")
        self.max_entries = max_entries
        self.retry_after = retry_after


def _zeroed_slots(size: int) -> memoryview:
    """``size`` zeroed 64-bit slots. Anonymous memory the OS zeroes page by page as it
    is first touched: a table of millions of slots is had at once, not copied in."""
    return memoryview(mmap.mmap(-1, 8 * size)).cast("Q")


def _find(slots: memoryview, mask: int, digest: int) -> bool:
    index = digest & mask
    while True:
        value = slots[index]
        if value == digest:
            return True
        if not value:
            return False
        index = (index + 1) & mask


def _place(slots: memoryview, mask: int, digest: int) -> None:
    index = digest & mask
    while slots[index]:
        index = (index + 1) & mask
    slots[index] = digest


class _DigestTable:
    """A set of non-zero 64-bit integers in one table of 8-byte slots: no object each.

    Open addressing with linear probing, at most half full (so 16-32 bytes an entry
    with the doubling). Nothing is ever removed: a whole table is dropped instead.

    Growing is incremental: the table doubles into a new one, and each ``add`` moves
    at most ``MOVE_PER_ADD`` slots of the old one across (the old one is searched too
    until it is empty), so no single claim pays for copying the whole table.
    """

    __slots__ = ("_moved", "_old", "count", "mask", "slots")

    #: Old slots moved per add while growing: the move ends long before the next growth
    #: (which needs as many adds as half the old table's slots; this takes an eighth).
    MOVE_PER_ADD = 8

    def __init__(self, capacity: int = 1024) -> None:
        size = 1024
        while size < capacity:
            size *= 2
        self.slots = _zeroed_slots(size)
        self.mask = size - 1
        self.count = 0
        self._old: memoryview | None = None
        self._moved = 0

    def __contains__(self, digest: int) -> bool:
        old = self._old
        return _find(self.slots, self.mask, digest) or (
            old is not None and _find(old, len(old) - 1, digest)
        )

    def add(self, digest: int) -> None:
        """Add ``digest`` (the caller knows it is absent)."""
        if self._old is not None:
            self._move(self.MOVE_PER_ADD)
        if 2 * (self.count + 1) > len(self.slots):
            self._grow()
        _place(self.slots, self.mask, digest)
        self.count += 1

    @property
    def pending_moves(self) -> int:
        """Slots of the old table not yet moved (0 when not growing)."""
        return 0 if self._old is None else len(self._old) - self._moved

    def _grow(self) -> None:
        if self._old is not None:  # not with MOVE_PER_ADD >= 2; keeps one old table at most
            self._move(self.pending_moves)
        self._old = self.slots
        self._moved = 0
        self.slots = _zeroed_slots(2 * len(self._old))
        self.mask = len(self.slots) - 1

    def _move(self, count: int) -> None:
        old = self._old
        assert old is not None
        start = self._moved
        end = min(start + count, len(old))
        slots, mask = self.slots, self.mask
        for value in old[start:end]:
            if value:
                _place(slots, mask, value)
        self._moved = end
        if end == len(old):
            self._old = None

    @property
    def nbytes(self) -> int:
        old = 0 if self._old is None else len(self._old)
        return (len(self.slots) + old) * 8


class MemoryReplayStore:
    """Used signatures in this process's memory, each kept between ``ttl`` and 2 x ``ttl``.

    A signature is remembered as a 64-bit digest (BLAKE2b) in a ``_DigestTable``: no
    Python object per signature, 16-32 bytes each (docs/server.md, "Replay store").
    Two generations: new digests go to the current table; every ``ttl`` seconds it
    becomes the previous one and the previous one is dropped whole. A digest is thus
    found for at least ``ttl`` after its claim (the window a signature is valid in)
    and forgotten within 2 x ``ttl``. A new generation starts at the size its
    predecessor reached, so steady traffic never waits for a table to grow.

    ``max_entries`` (0: no cap) bounds both generations together; when it is reached,
    ``claim`` raises ``ReplayStoreFull`` rather than forget a signature early (which
    would let it be replayed). Two different signatures share a digest with
    probability ~n/2^64: a false "already used" for one in ~10^13 at a million kept.
    """

    def __init__(self, max_entries: int = 0, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max_entries
        self._clock = clock
        self._current = _DigestTable()
        self._previous = _DigestTable(0)
        self._started = clock()  # when the current generation began

    async def claim(self, key: str, ttl: float) -> bool:
        now = self._clock()
        if now - self._started >= ttl:
            self._rotate(now, ttl)
        digest = int.from_bytes(blake2b(key.encode(), digest_size=8).digest(), "little") or 1
        if digest in self._current or digest in self._previous:
            return False
        if self.max_entries and len(self) >= self.max_entries:
            raise ReplayStoreFull(self.max_entries, retry_after=self._started + ttl - now)
        self._current.add(digest)
        return True

    def _rotate(self, now: float, ttl: float) -> None:
        if now - self._started >= 2 * ttl:  # idle for a whole generation: both are stale
            self._previous = _DigestTable(0)
        else:
            self._previous = self._current
        self._current = _DigestTable(2 * self._previous.count)
        # Generations start on multiples of ttl: a claim's lifetime stays within [ttl, 2 ttl].
        self._started = now - (now - self._started) % ttl

    def __len__(self) -> int:
        return self._current.count + self._previous.count

    @property
    def nbytes(self) -> int:
        """The memory the two tables hold, in bytes."""
        return self._current.nbytes + self._previous.nbytes


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

    ``replay`` is a ``ReplayStore`` (in memory: at most ``replay_max_entries``, 0: no
    cap); ``rate_storage`` a ``limits`` storage for the rate limiter with Redis
    (``None`` in memory: the guard keeps its own window, see
    ``guard.MemoryMovingWindow``). ``ping()`` says whether Redis answers (``None``
    without Redis).
    """

    def __init__(self, redis_url: str | None = None, *, replay_max_entries: int = 0) -> None:
        self.redis_url = redis_url
        self._client: aioredis.Redis | None = None
        self.rate_storage: Storage | None = None
        self.replay: ReplayStore
        if redis_url is None:
            self.replay = MemoryReplayStore(replay_max_entries)
            return
        options: dict[str, Any] = {
            "socket_timeout": REDIS_TIMEOUT,
            "socket_connect_timeout": REDIS_TIMEOUT,
            # No retries: a request should not wait several timeouts for a dead Redis.
            "retry": Retry(NoBackoff(), 0),
        }
        self._client = aioredis.Redis.from_url(redis_url, **options)
        self.replay = RedisReplayStore(self._client)
        # One connection pool for both, so that aclose() closes every connection.
        self.rate_storage = RedisStorage(
            "async+" + redis_url,
            implementation="redispy",
            wrap_exceptions=True,
            key_prefix=f"{_KEY_PREFIX}:rate",
            connection_pool=self._client.connection_pool,  # type: ignore[arg-type]  # documented, typed narrower
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
