"""``Client`` / ``AsyncClient`` over several deployments: failover, cut answers, the model."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gprochat import (
    AllDeploymentsFailedError,
    AsyncClient,
    Client,
    ConfigurationError,
    Deployment,
    IncompleteResponseError,
    Timeout,
)
from gprochat.providers import registry
from gprochat.server import BackgroundServer

from .conftest import ServerFactory
from .scripted import FAULTS, Fleet

HI = [{"role": "user", "content": "Hi"}]
ORDER = ["refusing", "rate-limited", "failing", "stalling", "wrong-key", "healthy"]
STALL = Timeout(connect=10, read=2.0)


@pytest.fixture(autouse=True)
def frozen_registry() -> Iterator[None]:
    """The process's registry, emptied, on a clock that stands still: no cool-down ends
    during a test however slow the machine (the registry's clock is replaceable)."""
    registry.clear()
    registry.clock = lambda: 1000.0
    yield
    registry.clock = time.monotonic
    registry.clear()


async def test_async_client_fails_over_and_streams_the_answer_once() -> None:
    async with Fleet(FAULTS) as fleet:
        client = AsyncClient(deployments=[{"base_url": fleet.url(n)} for n in ORDER], timeout=STALL)
        stream = await client.chat.completions.create(model="", messages=HI, stream=True)
        text = "".join([chunk.choices[0].delta.content or "" async for chunk in stream])
        assert text == "The whole answer."
        assert [fleet.count(n) for n in ORDER[1:]] == [1, 1, 1, 1, 1]
        # The next one goes straight to the healthy deployment: the others cool down or are retired.
        answer = await client.chat.completions.create(model="", messages=HI)
        assert answer.choices[0].message.content == "The whole answer."
        assert [fleet.count(n) for n in ORDER[1:]] == [1, 1, 1, 1, 2]
        await client.close()


async def test_async_client_reports_a_cut_answer_as_cut() -> None:
    async with Fleet({"cutting": FAULTS["cutting"], "healthy": FAULTS["healthy"]}) as fleet:
        client = AsyncClient(deployments=[fleet.url("cutting"), fleet.url("healthy")])
        stream = await client.chat.completions.create(model="", messages=HI, stream=True)
        received: list[str] = []
        with pytest.raises(IncompleteResponseError):
            async for chunk in stream:
                received.append(chunk.choices[0].delta.content or "")
        assert "".join(received) == "Half an ans" and fleet.count("healthy") == 0
        await client.close()


def test_client_fails_over_and_says_why_when_none_answers() -> None:
    with Fleet({n: FAULTS[n] for n in ORDER[1:]}).in_thread() as fleet:
        with Client(deployments=[Deployment(fleet.url(n)) for n in ORDER], timeout=STALL) as client:
            answer = client.chat.completions.create(model="", messages=HI)
            assert answer.choices[0].message.content == "The whole answer."
            chunks = list(client.chat.completions.create(model="", messages=HI, stream=True))
            assert "".join(c.choices[0].delta.content or "" for c in chunks) == "The whole answer."
            assert fleet.count("healthy") == 2 and fleet.count("wrong-key") == 1
        only_bad = Client(deployments=[fleet.url("wrong-key"), fleet.url("refusing")], max_retries=0)
        with pytest.raises(AllDeploymentsFailedError) as info:
            only_bad.chat.completions.create(model="", messages=HI)
        assert "not used again" in str(info.value) and "cannot connect" in str(info.value)
        assert fleet.count("wrong-key") == 1  # retired by the first client, in this process


def test_the_model_reported_is_the_one_that_answered(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    """A deployment declaring its model is reported as such, not as gemini-1.5-pro."""
    server: BackgroundServer = make_server(secret_key="s")
    file = tmp_path / "d.toml"
    file.write_text(f'[[deployment]]\nbase_url = "{server.base_url}"\nsecret_key = "s"\nmodel = "echo"\n')
    client = Client(deployments=file)
    answer = client.chat.completions.create(model="", messages=HI)
    assert answer.model == "echo"
    assert client.chat.completions.create(model="echo", messages=HI).model == "echo"
    chunks = list(client.chat.completions.create(model="echo", messages=HI, stream=True))
    assert {chunk.model for chunk in chunks} == {"echo"}
    assert [m.id for m in client.models.list().data][-1] == "echo"
    # Without a declared model the protocol cannot say: the name asked for is reported.
    plain = Client(base_url=server.base_url, secret_key="s")
    assert plain.chat.completions.create(model="gemini-pro", messages=HI).model == "gemini-1.5-pro"


def test_client_checks_deployments_where_it_is_built(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="not both"):
        Client(base_url="http://a.example", deployments=["http://b.example"])
    with pytest.raises(ConfigurationError, match="cannot read"):
        AsyncClient(deployments=tmp_path / "missing.toml")
    with pytest.raises(ConfigurationError, match="not an http"):
        Client(deployments=[{"base_url": "b.example"}])
