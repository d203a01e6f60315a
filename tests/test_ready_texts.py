"""``ready_texts``: runs of texts ready at the same instant become one text, none is held back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from gprochat._streams import ready_texts


class Paced:
    """An async generator's stream: each run at once, then a wait on an event the test sets."""

    def __init__(self, runs: list[list[str]], error: Exception | None = None) -> None:
        self.runs = runs
        self.error = error
        self.gates = [asyncio.Event() for _ in runs[1:]]
        self.closed = False

    async def stream(self) -> AsyncIterator[str]:
        try:
            for index, run in enumerate(self.runs):
                if index:
                    await self.gates[index - 1].wait()
                for text in run:
                    yield text
            if self.error is not None:
                raise self.error
        finally:
            self.closed = True


async def test_runs_are_joined_and_each_goes_out_before_the_wait() -> None:
    paced = Paced([["a", "", "b"], ["c"], ["d", "e"]])
    texts = ready_texts(paced.stream(), "first ")
    # The first text is ready with the first run.
    assert await asyncio.wait_for(texts.__anext__(), 5) == "first ab"
    assert not paced.gates[0].is_set()  # given out while the source still waits
    paced.gates[0].set()
    assert await asyncio.wait_for(texts.__anext__(), 5) == "c"
    paced.gates[1].set()
    assert [text async for text in texts] == ["de"]
    assert paced.closed


async def test_a_long_run_is_cut_at_the_limit() -> None:
    paced = Paced([["abc"] * 10])
    assert [text async for text in ready_texts(paced.stream(), limit=7)] == [
        "abcabcabc", "abcabcabc", "abcabcabc", "abc"
    ]


async def test_a_failure_comes_after_what_was_ready() -> None:
    paced = Paced([["x", "y"], ["z"]], ConnectionError("gone"))
    texts = ready_texts(paced.stream())
    assert await texts.__anext__() == "xy"
    paced.gates[0].set()
    assert await texts.__anext__() == "z"
    with pytest.raises(ConnectionError):
        await texts.__anext__()
    assert paced.closed


async def test_closing_while_the_source_waits_closes_the_source() -> None:
    # Given out while the source waits in a half-run step: closing must unwind that
    # step (the source's ``finally`` runs), not fail with "already running".
    paced = Paced([["ready"], ["never"]])
    source = paced.stream()
    texts = ready_texts(source)
    assert await texts.__anext__() == "ready"
    await texts.aclose()
    assert paced.closed


async def test_cancelling_the_wait_closes_the_source() -> None:
    paced = Paced([["ready"], ["never"]])
    texts = ready_texts(paced.stream())
    assert await texts.__anext__() == "ready"
    waiting = asyncio.ensure_future(texts.__anext__())
    await asyncio.sleep(0.05)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await texts.aclose()
    assert paced.closed
