"""The router's decisions with an injected clock: cool-downs, the half-open circuit, budgets.

The deployments are scripted backends in this process (the HTTP ones are covered
end to end in test_router.py): each records its calls, and a test decides when its
first text comes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Optional

import pytest

from gprochat.errors import BackendError
from gprochat.server.backends import Backend, Conversation
from gprochat.server.backends._router_health import MemoryHealth, cooldown_seconds
from gprochat.server.backends.router import Deployment, RoutedModel, RouterBackend, Strategy


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


class Scripted(Backend):
    """Answers its name, or raises ``fail``; waits for ``gate`` before its first text."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls = 0
        self.fail: Optional[BackendError] = None
        self.gate: Optional[asyncio.Event] = None

    async def stream(self, conversation: Conversation) -> AsyncIterator[str]:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        yield self.name


def make_router(*names: str, strategy: Strategy = "failover", clock: Clock,
                **budgets: Optional[int]) -> tuple[RouterBackend, list[Scripted]]:
    backends = [Scripted(name) for name in names]
    deployments = [Deployment(name, "scripted", [("key #1", backend)], **budgets)
                   for name, backend in zip(names, backends, strict=False)]
    health = MemoryHealth(cooldown=10, max_cooldown=40, clock=clock)
    return RouterBackend([RoutedModel("m", deployments, strategy)], health=health), backends


async def answer(router: RouterBackend) -> str:
    return "".join([text async for text in router.stream(Conversation("Hi"))])


def test_back_off_doubles_up_to_the_maximum_and_retry_after_is_honoured_exactly() -> None:
    assert [cooldown_seconds(n, None, 10, 40) for n in (1, 2, 3, 4, 5)] == [10, 20, 40, 40, 40]
    assert cooldown_seconds(3, 2.0, 10, 40) == 2.0


async def test_a_failed_deployment_cools_then_half_opens_for_exactly_one_trial() -> None:
    clock = Clock()
    router, (first, _second) = make_router("first", "second", clock=clock)
    first.fail = BackendError("overloaded", status=503)
    assert await answer(router) == "second"
    assert await answer(router) == "second"  # cooling: not asked
    assert first.calls == 1
    clock.now += 10  # the cool-down is over: half-open
    first.fail, first.gate = None, asyncio.Event()
    trial = asyncio.ensure_future(answer(router))
    while first.calls < 2:
        await asyncio.sleep(0)
    # While the trial waits for its first text, every other request skips "first".
    assert [await answer(router) for _ in range(3)] == ["second"] * 3
    assert first.calls == 2
    first.gate.set()
    assert await trial == "first"
    assert await answer(router) == "first"  # closed again: healthy


async def test_a_failed_trial_cools_twice_as_long() -> None:
    clock = Clock()
    router, (first, _) = make_router("first", "second", clock=clock)
    first.fail = BackendError("down", status=502)
    await answer(router)
    clock.now += 10
    await answer(router)  # the trial fails
    assert first.calls == 2
    clock.now += 19.9
    await answer(router)
    assert first.calls == 2
    clock.now += 0.1
    first.fail = None
    assert await answer(router) == "first"


async def test_429_cools_exactly_for_its_retry_after() -> None:
    clock = Clock()
    router, (first, _) = make_router("first", "second", clock=clock)
    first.fail = BackendError("slow down", status=429, retry_after=2)
    await answer(router)
    clock.now += 1.99
    await answer(router)
    assert first.calls == 1
    clock.now += 0.01
    first.fail = None
    assert await answer(router) == "first"


async def test_rpm_budget_sends_the_rest_of_the_minute_to_the_next_deployment() -> None:
    clock = Clock()
    router, _ = make_router("first", "second", clock=clock, rpm=2)
    assert [await answer(router) for _ in range(4)] == ["first", "first", "second", "second"]
    clock.now += 30
    with pytest.raises(BackendError) as info:
        await answer(router)
    assert info.value.status == 429 and info.value.retry_after == 30
    assert "requests-per-minute budget spent" in info.value.message
    clock.now += 30
    assert await answer(router) == "first"


async def test_least_busy_and_max_concurrency_count_answers_in_flight() -> None:
    clock = Clock()
    router, (first, second) = make_router("first", "second", strategy="least-busy", clock=clock,
                                          max_concurrency=1)
    first.gate = asyncio.Event()
    second.gate = asyncio.Event()
    held = asyncio.ensure_future(answer(router))  # first: both idle, declared order
    while first.calls < 1:
        await asyncio.sleep(0)
    also_held = asyncio.ensure_future(answer(router))  # second: first is busier
    while second.calls < 1:
        await asyncio.sleep(0)
    with pytest.raises(BackendError) as info:  # both at max-concurrency
        await answer(router)
    assert info.value.status == 503 and "busy" in info.value.message
    first.gate.set()
    second.gate.set()
    assert (await held, await also_held) == ("first", "second")
    assert [d.in_flight for d in router.routed["m"].deployments] == [0, 0]


async def test_a_client_leaving_during_the_trial_frees_it_for_the_next_request() -> None:
    clock = Clock()
    router, (first, _) = make_router("first", "second", clock=clock)
    first.fail = BackendError("down", status=502)
    await answer(router)
    clock.now += 10
    first.fail, first.gate = None, asyncio.Event()
    trial = asyncio.ensure_future(answer(router))
    while first.calls < 2:
        await asyncio.sleep(0)
    trial.cancel()
    with pytest.raises(asyncio.CancelledError):
        await trial
    first.gate.set()
    assert await answer(router) == "first"


async def test_the_requests_own_fault_is_passed_on_without_failover() -> None:
    router, (first, second) = make_router("first", "second", clock=Clock())
    first.fail = BackendError("prompt too long", status=400)
    with pytest.raises(BackendError) as info:
        await answer(router)
    assert info.value.status == 400 and second.calls == 0
    first.fail = None
    assert await answer(router) == "first"  # and it is not cooling


async def test_failovers_are_counted_for_the_deployment_left_only_when_another_is_tried() -> None:
    clock = Clock()
    router, (first, second) = make_router("first", "second", clock=clock)
    events: list[tuple[str, str]] = []
    router.on_event = lambda deployment, event: events.append((deployment, event))
    first.fail = second.fail = BackendError("down", status=502)
    with pytest.raises(BackendError) as info:
        await answer(router)
    assert info.value.status == 503
    assert events == [("first", "request"), ("first", "failure"), ("first", "failover"),
                      ("second", "request"), ("second", "failure")]
