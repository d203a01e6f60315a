"""The router's deployment health in a real redis-server, shared by processes.

Two ``RedisHealth`` stores stand for two processes (with one injected clock); then two
real ``gprochat serve`` processes share one Redis behind a rate-limited upstream.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from gprochat.server.backends._router_health import RedisHealth

from ...processes import clean_env, served
from ..conftest import RedisProcess
from ..helpers import post, signed
from .conftest import ScriptedUpstream


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def stores(redis_server: RedisProcess) -> AsyncIterator[tuple[RedisHealth, RedisHealth, Clock]]:
    clock = Clock()
    first, second = (RedisHealth(redis_server.url, cooldown=10, max_cooldown=40, clock=clock)
                     for _ in range(2))
    yield first, second, clock
    await first.aclose()
    await second.aclose()


async def test_a_cool_down_recorded_by_one_process_is_seen_by_the_other(stores) -> None:
    first, second, clock = stores
    assert (await second.admit("d", None)).ok
    assert await first.failed("d", 2.0) == clock.now + 2
    admission = await second.admit("d", None)
    assert (admission.ok, admission.reason, admission.wait) == (False, "cooling", 2.0)
    health = await second.health("d")
    assert (health.failures, health.cooling_until) == (1, clock.now + 2)


async def test_the_half_open_trial_is_given_to_exactly_one_process(stores) -> None:
    first, second, clock = stores
    await first.failed("d", None)
    clock.now += 10
    verdicts = [await store.admit("d", None) for store in (first, second, first, second)]
    assert [(v.ok, v.trial, v.reason) for v in verdicts] == [
        (True, True, ""), (False, False, "trial"), (False, False, "trial"), (False, False, "trial")]
    await first.failed("d", None)  # the trial failed: twice as long now
    clock.now += 19.9
    assert (await second.admit("d", None)).reason == "cooling"
    clock.now += 0.1
    assert (await second.admit("d", None)).trial
    await second.succeeded("d")
    verdict = await first.admit("d", None)
    assert (verdict.ok, verdict.trial) == (True, False)


async def test_the_rpm_budget_is_shared(stores) -> None:
    first, second, clock = stores
    assert [(await s.admit("d", 3)).ok for s in (first, second, first, second)] == [
        True, True, True, False]
    clock.now += 60
    assert (await second.admit("d", 3)).ok


async def test_two_servers_sharing_redis_skip_a_deployment_either_one_cooled(
    redis_server: RedisProcess, upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    seen: list[float] = []

    async def rate_limited(request: web.Request) -> web.StreamResponse:
        seen.append(time.monotonic())
        return web.json_response({"error": {"message": "quota"}}, status=429,
                                 headers={"Retry-After": "30"})

    upstream.respond(rate_limited)
    config = tmp_path / "gprochat.toml"
    config.write_text(
        '[models."gemini-pro"]\n'
        '[[models."gemini-pro".deployments]]\n'
        f'backend = "gemini"\nname = "limited"\nbase-url = "{upstream.url}"\napi-key = "AIza-k"\n'
        '[[models."gemini-pro".deployments]]\nbackend = "echo"\nname = "fallback"\n')
    args = ("--config", str(config), "--redis-url", redis_server.url, "--log-level", "warning")
    with served(*args, env=clean_env()) as first, served(*args, env=clean_env()) as second:
        for base_url in (first, second, first, second):
            status, _, body = await post(base_url, signed("still answered"))
            assert status == 200 and body.decode().endswith("still answered")
        assert len(seen) == 1  # one process was told 429; neither asked again
        async with aiohttp.ClientSession() as session:
            async with session.get(second + "/healthz") as response:
                states = {d["name"]: d for d in json.loads(await response.read())["deployments"]}
    assert states["limited"]["state"] == "cooling" and states["fallback"]["state"] == "healthy"


async def test_max_concurrency_is_shared_and_a_released_lease_frees_its_place(stores) -> None:
    first, second, _ = stores
    held = [await first.admit("d", None, 2), await second.admit("d", None, 2)]
    assert all(a.ok and a.lease for a in held)
    busy = await first.admit("d", None, 2)
    assert (busy.ok, busy.reason) == (False, "busy")
    lease = held[0].lease
    assert lease is not None
    await first.release("d", lease)
    assert (await second.admit("d", None, 2)).ok
