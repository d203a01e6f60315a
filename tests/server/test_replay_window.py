"""The timestamp window and replay protection, with a fixed clock: the exact edges of
the window, how long a spent signature stays spent, and what happens when the store fails."""

from __future__ import annotations

import logging

import pytest

from gprochat.errors import SharedStateError
from gprochat.server.guard import FailurePolicy, Rejected
from gprochat.server.replay import REPLAY_STATUS, SIGNATURE_ALREADY_USED, ReplayGuard
from gprochat.server.stores import MemoryReplayStore, ReplayStoreFull

NOW = 1_700_000_000.0


class RecordingStore(MemoryReplayStore):
    """The memory store, noting every claim's key and time to live."""

    def __init__(self) -> None:
        super().__init__()
        self.claims: list[tuple[str, float]] = []

    async def claim(self, key: str, ttl: float) -> bool:
        self.claims.append((key, ttl))
        return await super().claim(key, ttl)


class FailingStore:
    async def claim(self, key: str, ttl: float) -> bool:
        raise SharedStateError("Redis failed during the replay check: down", operation="replay check")


def _guard(window: float, store: object = None, mode: str = "closed") -> ReplayGuard:
    store = RecordingStore() if store is None else store
    return ReplayGuard(window, store, FailurePolicy(mode), clock=lambda: NOW)  # type: ignore[arg-type]


async def _status(guard: ReplayGuard, time_ms: float, sign: str = "ab") -> int:
    try:
        await guard.check(int(time_ms), sign)
    except Rejected as exc:
        return exc.status
    return 200


async def test_the_window_edges_are_inclusive() -> None:
    guard = _guard(300)
    assert await _status(guard, (NOW + 300) * 1000, "a") == 200
    assert await _status(guard, (NOW - 300) * 1000, "b") == 200
    assert await _status(guard, (NOW + 300) * 1000 + 1, "c") == 401
    assert await _status(guard, (NOW - 300) * 1000 - 1, "d") == 401


async def test_a_spent_signature_is_remembered_for_twice_the_window() -> None:
    store = RecordingStore()
    guard = _guard(300, store)
    await guard.check(int(NOW * 1000), "AbC")
    assert store.claims == [("abc", 600)]


async def test_a_signature_is_spent_whatever_its_case() -> None:
    guard = _guard(300)
    await guard.check(int(NOW * 1000), "abcdef")
    with pytest.raises(Rejected) as caught:
        await guard.check(int(NOW * 1000), "ABCDEF")
    assert (caught.value.status, caught.value.message) == (REPLAY_STATUS, SIGNATURE_ALREADY_USED)
    assert REPLAY_STATUS == 409
    assert SIGNATURE_ALREADY_USED.startswith("Signature already used: ")


async def test_window_zero_turns_both_checks_off() -> None:
    store = RecordingStore()
    guard = _guard(0, store)
    assert not guard.enabled
    await guard.check(0, "x")
    await guard.check(0, "x")
    assert store.claims == []
    assert _guard(0.001).enabled


@pytest.mark.parametrize(
    ("offset", "window", "text"),
    [
        (600, 300, "off by 600 seconds (ahead of the server's; at most 300 allowed)"),
        (-600, 300, "off by 600 seconds (behind the server's; at most 300 allowed)"),
        (0.8, 0.5, "off by 1 seconds (ahead of the server's; at most 0.5 allowed)"),
        (-0.8, 0.5, "(behind the server's; at most 0.5 allowed)"),
    ],
)
async def test_the_clock_message(offset: float, window: float, text: str) -> None:
    with pytest.raises(Rejected) as caught:
        await _guard(window).check(int((NOW + offset) * 1000), "x")
    message = caught.value.message
    assert caught.value.status == 401
    assert message.startswith("Request timestamp outside the server's window: the client's clock is ")
    assert text in message
    assert message.endswith(
        "Correct the client's clock, and send 'time' in milliseconds since the epoch."
    )


async def test_a_failing_store_fails_closed_with_503() -> None:
    with pytest.raises(Rejected) as caught:
        await _guard(300, FailingStore(), "closed").check(int(NOW * 1000), "x")
    assert caught.value.status == 503
    assert isinstance(caught.value.__cause__, SharedStateError)


async def test_a_failing_store_fails_open_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="gprochat.server.guard"):
        await _guard(300, FailingStore(), "open").check(int(NOW * 1000), "x")
    assert "shared state unreachable during the replay check" in caplog.text
    assert "serving without it (fail-open)" in caplog.text


class FullStore:
    def __init__(self, retry_after: float) -> None:
        self.retry_after = retry_after

    async def claim(self, key: str, ttl: float) -> bool:
        raise ReplayStoreFull(7, self.retry_after)


@pytest.mark.parametrize(("retry_after", "header"), [(0.2, "1"), (2.3, "3"), (60.0, "60")])
async def test_a_full_store_refuses_with_503_rather_than_forget(retry_after: float, header: str) -> None:
    with pytest.raises(Rejected) as caught:
        await _guard(300, FullStore(retry_after)).check(int(NOW * 1000), "x")
    assert (caught.value.status, caught.value.headers) == (503, {"Retry-After": header})
    assert caught.value.message == (
        "The server is busy: it remembers 7 recent signatures, its limit, and cannot check this "
        f"one. Retry in {header} seconds."
    )
    assert isinstance(caught.value.__cause__, ReplayStoreFull)


async def test_the_real_store_when_full() -> None:
    guard = _guard(300, MemoryReplayStore(max_entries=1, clock=lambda: 0.0))
    await guard.check(int(NOW * 1000), "first")
    with pytest.raises(Rejected) as caught:
        await guard.check(int(NOW * 1000), "second")
    assert caught.value.status == 503
    with pytest.raises(Rejected) as caught:
        await guard.check(int(NOW * 1000), "first")
    assert caught.value.status == 409  # a spent signature is still known when the store is full
