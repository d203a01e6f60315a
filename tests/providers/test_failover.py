"""Failover across deployments: before the first text only, cool-downs remembered, once each."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from gprochat import (
    AllDeploymentsFailedError,
    BadRequestError,
    ConfigurationError,
    ConnectError,
    Deployment,
    GPROChat,
    IncompleteResponseError,
    ModelNotSupportedError,
    Timeout,
)
from gprochat.providers import AnsweredBy, DeploymentRegistry, registry
from gprochat.providers._deployments import load_deployments, parse_deployment

from ..scripted import FAULTS, Fleet, answering, refusing_status

HELLO = [{"role": "user", "content": "Hello!"}]
# The stalling upstream is given up on after this long without its first text.
STALL = Timeout(connect=10, read=2.0)
ORDER = ["refusing", "rate-limited", "failing", "stalling", "wrong-key", "healthy"]


class FakeClock:
    """The registry's clock, moved by hand: cool-downs end when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def fresh_registry() -> Iterator[None]:
    # Ports are reused between tests: no cool-down may leak from one test to the next.
    registry.clear()
    yield
    registry.clear()


def deployments(fleet: Fleet, names: list[str]) -> list[Deployment]:
    return [Deployment(fleet.url(name), secret_key="k") for name in names]


async def test_each_fault_before_the_first_text_fails_over_and_one_answer_arrives() -> None:
    clock = FakeClock()
    reg = DeploymentRegistry(clock=clock)
    answered: list[AnsweredBy] = []
    async with Fleet(FAULTS) as fleet:
        listed = deployments(fleet, ORDER)
        chunks = [chunk async for chunk in GPROChat.create_async_generator(
            "", HELLO, deployments=listed, timeout=STALL, registry=reg, on_answer=answered.append)]
        assert "".join(chunks) == "The whole answer."  # once: nothing from the faulty ones
        assert [fleet.count(name) for name in ORDER[1:]] == [1, 1, 1, 1, 1]
        assert [a.base_url for a in answered] == [fleet.url("healthy")]

        # The next request skips every deployment still cooling down (and the retired one).
        text = await GPROChat.create_async("", HELLO, deployments=listed, timeout=STALL, registry=reg)
        assert text == "The whole answer."
        assert [fleet.count(name) for name in ORDER[1:]] == [1, 1, 1, 1, 2]

        # 1.5 s later the 1 s back-offs are over, but not the 429's Retry-After: 2.
        clock.now += 1.5
        await GPROChat.create_async("", HELLO, deployments=listed, timeout=STALL, registry=reg)
        assert [fleet.count(name) for name in ORDER[1:]] == [1, 2, 2, 1, 3]

        # Past its Retry-After the rate-limited one is asked again; the 401 never is.
        clock.now += 1.0
        await GPROChat.create_async("", HELLO, deployments=listed, timeout=STALL, registry=reg)
        assert fleet.count("rate-limited") == 2 and fleet.count("wrong-key") == 1


async def test_back_off_doubles_on_repeated_failures() -> None:
    clock = FakeClock()
    reg = DeploymentRegistry(clock=clock)
    async with Fleet({"failing": FAULTS["failing"], "healthy": FAULTS["healthy"]}) as fleet:
        listed = deployments(fleet, ["failing", "healthy"])
        for step in (0.0, 1.1, 2.1):  # it fails each time: 1 s, then 2 s, then 4 s
            clock.now += step
            await GPROChat.create_async("", HELLO, deployments=listed, registry=reg)
        assert fleet.count("failing") == 3
        clock.now += 3.9  # inside the 4 s
        await GPROChat.create_async("", HELLO, deployments=listed, registry=reg)
        assert fleet.count("failing") == 3 and fleet.count("healthy") == 4
        [state] = [s for s in reg.states() if s.display == fleet.url("failing")]
        assert state.failures == 3


async def test_a_cut_after_the_first_text_is_reported_as_cut_never_completed_elsewhere() -> None:
    async with Fleet({"cutting": FAULTS["cutting"], "healthy": FAULTS["healthy"]}) as fleet:
        received: list[str] = []
        with pytest.raises(IncompleteResponseError) as info:
            async for chunk in GPROChat.create_async_generator(
                "", HELLO, deployments=deployments(fleet, ["cutting", "healthy"])
            ):
                received.append(chunk)
        assert received == ["Half an ans"]
        assert fleet.count("healthy") == 0  # never stitched from a second deployment
        assert "cut off after 11 characters" in str(info.value)
        with pytest.raises(IncompleteResponseError) as whole:
            await GPROChat.create_async("", HELLO, deployments=deployments(fleet, ["cutting", "healthy"]))
        assert whole.value.partial_text == "Half an ans" and fleet.count("healthy") == 0


async def test_when_all_fail_one_error_lists_each_deployment_and_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    names = ["refusing", "rate-limited", "failing", "stalling", "wrong-key"]
    caplog.set_level(logging.INFO, logger="gprochat.failover")
    reg = DeploymentRegistry(clock=FakeClock())
    async with Fleet({name: FAULTS[name] for name in names[1:]}) as fleet:
        listed = deployments(fleet, names)
        with pytest.raises(AllDeploymentsFailedError) as info:
            await GPROChat.create_async("", HELLO, deployments=listed, timeout=STALL, max_retries=0,
                                        registry=reg)
        message = str(info.value)
        for name, why in [("refusing", "cannot connect"), ("rate-limited", "answered 429"),
                          ("failing", "answered 500 The model crashed."),
                          ("stalling", "read timeout (2s)"),
                          ("wrong-key", "answered 401 Invalid signature.")]:
            assert f"{fleet.url(name)}: {why}" in message
        assert "not used again" in message and "cooling down 2.0s more" in message
        assert [url for url, _, _ in info.value.failures] == [fleet.url(n) for n in names]
        assert info.value.attempts == 5
        assert isinstance(info.value.failures[1][2], Exception)

        # Again at once: nothing is asked (all cool down or are retired); the 401 is
        # said only the first time.
        with pytest.raises(AllDeploymentsFailedError) as again:
            await GPROChat.create_async("", HELLO, deployments=listed, timeout=STALL, max_retries=0,
                                        registry=reg)
        assert [fleet.count(name) for name in names[1:]] == [1, 1, 1, 1]
        assert "not tried" not in str(again.value)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "will not use it again" in warnings[0].getMessage()


async def test_a_retry_round_waits_for_the_retry_after_before_asking_again() -> None:
    times: list[float] = []
    rate_limited = refusing_status(429, "Slow down.", {"Retry-After": "1"})

    async def once_then_ok(request, writer):  # type: ignore[no-untyped-def]
        import time

        times.append(time.monotonic())
        await (rate_limited if len(times) == 1 else answering("late"))(request, writer)

    async with Fleet({"one": once_then_ok}) as fleet:
        text = await GPROChat.create_async(
            "", HELLO, deployments=[fleet.url("one")], max_retries=1
        )
    assert text == "late"
    # The second request came after the Retry-After, never before it.
    assert len(times) == 2 and times[1] - times[0] >= 0.95


async def test_a_request_the_deployments_would_all_refuse_is_not_failed_over() -> None:
    bad = refusing_status(400, "messages is malformed")
    async with Fleet({"bad": bad, "healthy": FAULTS["healthy"]}) as fleet:
        with pytest.raises(BadRequestError):
            await GPROChat.create_async("", HELLO, deployments=deployments(fleet, ["bad", "healthy"]))
        assert fleet.count("healthy") == 0


async def test_a_declared_model_routes_and_is_reported() -> None:
    async with Fleet({"gemini": answering("from gemini"), "small": answering("from small")}) as fleet:
        listed = [Deployment(fleet.url("gemini")), Deployment(fleet.url("small"), model="SmolLM2")]
        answered: list[AnsweredBy] = []
        text = await GPROChat.create_async("SmolLM2", HELLO, deployments=listed, on_answer=answered.append)
        assert text == "from small" and fleet.count("gemini") == 0
        assert answered[0].model == "SmolLM2"
        # The provider's own names are only labels: every deployment answers them.
        assert await GPROChat.create_async("gemini-pro", HELLO, deployments=listed,
                                           on_answer=answered.append) == "from gemini"
        assert answered[1].model == "gemini-1.5-pro"
        with pytest.raises(ModelNotSupportedError) as info:
            await GPROChat.create_async("llama-9", HELLO, deployments=listed)
        assert "SmolLM2" in str(info.value) and "gemini-1.5-pro" in str(info.value)


async def test_deployments_are_accepted_as_dicts_strings_and_a_toml_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with Fleet({"healthy": FAULTS["healthy"]}) as fleet:
        url = fleet.url("healthy")
        dead = fleet.url("refusing")
        assert await GPROChat.create_async("", HELLO, deployments=[{"base_url": dead}, {"base_url": url}])
        assert await GPROChat.create_async("", HELLO, deployments=[f"{dead},secret=a", f"{url},secret=b"])
        file = tmp_path / "deployments.toml"
        file.write_text(f'[[deployment]]\nbase_url = "{dead}"\n\n[[deployment]]\nbase_url = "{url}"\n'
                        'secret_key = "s"\npassword = "p"\n')
        assert await GPROChat.create_async("", HELLO, deployments=file)
        monkeypatch.setenv("GPROCHAT_DEPLOYMENTS", str(file))
        assert await GPROChat.create_async("", HELLO)  # the environment's file
        assert fleet.count("healthy") == 4
        body = fleet.servers["healthy"].requests[-1].json()
        assert body["pass"] == "p"


def test_bad_deployment_settings_say_what_to_write(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="is not one of secret=, password=, model="):
        parse_deployment("http://a.example,key=1")
    with pytest.raises(ConfigurationError, match="not an http:// or https:// URL"):
        parse_deployment("a.example:8000")
    file = tmp_path / "d.toml"
    file.write_text('[[deployment]]\nurl = "http://a.example"\n')
    with pytest.raises(ConfigurationError, match=r"unknown key.*url.*base_url"):
        load_deployments(file)
    file.write_text("[[deployment]\n")
    with pytest.raises(ConfigurationError, match="is not valid TOML"):
        load_deployments(file)
    with pytest.raises(ConfigurationError, match="cannot read"):
        load_deployments(tmp_path / "missing.toml")
    with pytest.raises(ConfigurationError, match="not both"):
        GPROChat.create("", HELLO, base_url="http://a.example", deployments=["http://b.example"])
    with pytest.raises(ConfigurationError, match="is empty"):
        GPROChat.create("", HELLO, deployments=[])


async def test_the_dead_default_is_not_retried_and_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    dead = Fleet({}).url("refusing")
    monkeypatch.setattr(GPROChat, "api_endpoint", dead + "/api/generate")
    for name in ("GPROCHAT_BASE_URL", "GPROCHAT_DEPLOYMENTS"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConnectError) as info:
        await GPROChat.create_async("", HELLO, max_retries=5)
    assert info.value.attempts == 1
    assert "pass base_url= or deployments=" in str(info.value)
