"""The in-memory replay store: bytes per remembered signature, how long one stays spent, its cap."""

from __future__ import annotations

import hashlib
import json
import tracemalloc

import pytest

from gprochat.server import ServerConfig
from gprochat.server.stores import MemoryReplayStore, ReplayStoreFull, _DigestTable

from ..conftest import ServerFactory
from .helpers import error_message, post, signed


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def sign(index: int) -> str:
    return hashlib.sha256(f"request {index}".encode()).hexdigest()


async def test_bytes_per_remembered_signature_are_few() -> None:
    count = 200_000
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        store = MemoryReplayStore()
        for index in range(count):
            assert await store.claim(sign(index), 600)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(store) == count
    per_entry = grown / count
    # No Python object per signature: the tables are anonymous memory (not traced),
    # 8 bytes a slot, at most half and at least a quarter full: 16-32 bytes an entry
    # (nbytes). The OrderedDict of hex strings they replace took ~270 bytes an entry.
    assert per_entry <= 34, per_entry
    assert store.nbytes / count <= 33
    print(f"\nreplay store: {per_entry:.1f} bytes per signature at {count} signatures")


async def test_every_claimed_signature_is_found_again_across_table_growth() -> None:
    store = MemoryReplayStore()
    keys = [sign(index) for index in range(5000)]  # the table doubles several times
    assert all([await store.claim(key, 600) for key in keys])
    assert not any([await store.claim(key, 600) for key in keys])
    assert await store.claim(sign(5000), 600)


def test_the_table_grows_a_few_slots_per_claim_and_finds_everything_meanwhile() -> None:
    table = _DigestTable()
    step = _DigestTable.MOVE_PER_ADD
    digests = [int(sign(index)[:16], 16) or 1 for index in range(12_000)]
    growths = 0
    for count, digest in enumerate(digests, 1):
        before = table.pending_moves
        table.add(digest)
        after = table.pending_moves
        if after > before:  # a growth began: the whole old table waits to be moved ...
            growths += 1
            assert before == 0 and after == len(table.slots) // 2
        else:  # ... and each claim moves at most `step` slots of it, never all at once
            assert before - after <= step
        if count % 1_999 == 0 or after > before:
            assert all(d in table for d in digests[:count])  # found wherever they are
            assert 31_337 not in table
    assert growths == 5  # 1,024 slots -> 32,768 for 12,000 digests, all moved across
    assert table.pending_moves == 0 and table.count == 12_000
    assert table.nbytes == 32_768 * 8


async def test_a_signature_stays_spent_for_at_least_ttl_and_at_most_twice_that() -> None:
    clock = Clock()
    store = MemoryReplayStore(clock=clock)
    ttl = 600.0
    assert await store.claim("a", ttl)
    clock.now += ttl - 1  # still in the first generation
    assert not await store.claim("a", ttl)
    assert await store.claim("b", ttl)  # b: claimed 1 s before the generation ends
    clock.now += 1  # a new generation: a and b move to the previous one
    assert not await store.claim("a", ttl)
    assert not await store.claim("b", ttl)
    clock.now += ttl - 2  # b was claimed ttl - 1 s ago: still spent
    assert not await store.claim("b", ttl)
    clock.now += 2  # 2 x ttl after a: both forgotten with the old generation
    assert await store.claim("a", ttl)
    assert await store.claim("b", ttl)
    assert len(store) == 2


async def test_after_a_long_silence_everything_is_forgotten() -> None:
    clock = Clock()
    store = MemoryReplayStore(clock=clock)
    for key in "abc":
        assert await store.claim(key, 10)
    clock.now += 25  # more than two generations
    assert await store.claim("a", 10)
    assert len(store) == 1


async def test_memory_stays_bounded_over_many_windows() -> None:
    # 275,000 requests spread over 11 windows of 25,000: the store holds at most two
    # windows' worth, whatever ran before.
    clock = Clock()
    store = MemoryReplayStore(clock=clock)
    peak = 0
    for index in range(275_000):
        if index and index % 25_000 == 0:
            clock.now += 600
        assert await store.claim(sign(index), 600)
        peak = max(peak, len(store))
    assert peak <= 50_000
    assert store.nbytes <= 50_000 * 33


async def test_the_cap_refuses_rather_than_forgets() -> None:
    clock = Clock()
    store = MemoryReplayStore(max_entries=3, clock=clock)
    for key in "abc":
        assert await store.claim(key, 100)
    clock.now += 40
    with pytest.raises(ReplayStoreFull) as caught:
        await store.claim("d", 100)
    assert caught.value.max_entries == 3 and caught.value.retry_after == pytest.approx(60)
    assert not await store.claim("a", 100)  # a replay is still recognised when full
    clock.now += 60  # a new generation; the old ones stay spent until the next
    with pytest.raises(ReplayStoreFull):
        await store.claim("d", 100)
    clock.now += 100
    assert await store.claim("d", 100)


async def test_a_full_replay_store_answers_503_with_retry_after(make_server: ServerFactory) -> None:
    server = make_server(ServerConfig(replay_max_entries=2, rate_limit=None))
    first = signed("one")
    assert (await post(server.base_url, first))[0] == 200
    assert (await post(server.base_url, signed("two")))[0] == 200
    status, headers, body = await post(server.base_url, signed("three"))
    assert status == 503
    assert "remembers 2 recent signatures" in error_message(body)
    assert int(headers["Retry-After"]) >= 1
    status, _, body = await post(server.base_url, json.dumps(first).encode())
    assert status == 409  # replays are still refused as replays
