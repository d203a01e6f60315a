"""B5, gateway overhead: the same streamed answer via ``/v1/chat/completions`` vs ``/api/generate``.

One server process (echo backend, one word per chunk, no delay, ~2,000 chunks per
answer) serves both routes; the client (this process) reads each answer to its end
with raw aiohttp, alternating routes round by round. Time per chunk = the answer's
wall time / its chunk count (the same for both: one backend event, one chunk).
Skipped, saying so, when the server has no gateway yet.

Beside it, the size of what the gateway sends: the mean bytes of a content event whose
delta is three characters (framing included), against the same chunk dumped with every
field the openai package defines, ``null`` or not (what the gateway sent before it wrote
only OpenAI's fields; docs/benchmarks.md, B5).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from typing import Any, Optional

from ._proc import ServerProcess
from ._report import Row, paired_ratio

__all__ = ["run"]

PREFIX_WORDS = 10  # "Echo from the built-in echo backend (no model behind it): "
API_KEY = os.environ.get("GPROCHAT_BENCH_GATEWAY_KEY", "bench-key")


async def _measure(
    base_url: str, rounds: int, per_round: int, words: int
) -> Optional[dict[str, list[float]]]:
    import aiohttp

    from .b3_server import signed_body

    body_words = " ".join(f"w{index}" for index in range(words))
    chunks = PREFIX_WORDS + words
    times: dict[str, list[float]] = {"gateway": [], "generate": []}
    async with aiohttp.ClientSession() as session:

        async def gateway(tag: str) -> bytes:
            payload = {
                "model": "echo",
                "stream": True,
                "messages": [{"role": "user", "content": f"{tag} {body_words}"}],
            }
            async with session.post(
                base_url + "/v1/chat/completions",
                json=payload,
                headers={"Authorization": f"Bearer {API_KEY}"},
            ) as r:
                if r.status != 200:
                    raise LookupError(f"HTTP {r.status}: {(await r.text())[:300]}")
                return b"".join([chunk async for chunk in r.content.iter_any()])

        async def generate(tag: str) -> bytes:
            async with session.post(
                base_url + "/api/generate",
                data=signed_body(f"{tag} {body_words}"),
                headers={"Content-Type": "text/plain;charset=UTF-8"},
            ) as r:
                r.raise_for_status()
                return b"".join([chunk async for chunk in r.content.iter_any()])

        try:
            await gateway("probe")
        except LookupError as exc:
            print(f"B5: the gateway is not there or refused us ({exc}); skipped")
            return None
        routes = {"gateway": gateway, "generate": generate}
        for index in range(rounds):
            order = ("gateway", "generate") if index % 2 == 0 else ("generate", "gateway")
            for name in order:
                started = time.perf_counter()
                for repeat in range(per_round):
                    answer = await routes[name](f"r{index}-{repeat}")
                    if name == "gateway" and b"[DONE]" not in answer[-64:]:
                        raise RuntimeError("B5: the gateway's stream did not end with data: [DONE]")
                elapsed = time.perf_counter() - started
                times[name].append(elapsed / per_round / chunks * 1e6)
    return times


SHORT_DELTA = "ab "  # three characters: one echo chunk per word
SHORT_ANSWERS = 5


async def _event_bytes(base_url: str, answers: int) -> tuple[list[float], list[float]]:
    """Per answer: mean bytes of an event whose delta is ``SHORT_DELTA``, as sent and as
    dumped with every field (the form before). The server must not join texts."""
    import aiohttp

    from gprochat.openai.types import ChatCompletionChunk

    sent: list[float] = []
    padded: list[float] = []
    async with aiohttp.ClientSession() as session:
        for index in range(answers):
            payload = {
                "model": "echo",
                "stream": True,
                "messages": [{"role": "user", "content": f"r{index} " + SHORT_DELTA * 200}],
            }
            async with session.post(
                base_url + "/v1/chat/completions",
                json=payload,
                headers={"Authorization": f"Bearer {API_KEY}"},
            ) as r:
                raw = await r.read()
            ours: list[int] = []
            every_field: list[int] = []
            for event in raw.split(b"\n\n"):
                if not event.startswith(b"data: {"):
                    continue
                chunk = ChatCompletionChunk.model_validate_json(event[len(b"data: "):])
                delta = chunk.choices[0].delta if chunk.choices else None
                if delta is not None and delta.role is None and delta.content == SHORT_DELTA:
                    ours.append(len(event) + 2)
                    every_field.append(len(b"data: " + chunk.model_dump_json().encode()) + 2)
            if not ours:
                raise RuntimeError(f"B5: no event with the delta {SHORT_DELTA!r} (texts joined?)")
            sent.append(statistics.mean(ours))
            padded.append(statistics.mean(every_field))
    return sent, padded


PACED_DELAY = 1e-6  # seconds: each text waits for the event loop, so none is ready together


def run(quick: bool, server_config: dict[str, Any]) -> list[Row]:
    rounds, per_round = (4, 3) if quick else (10, 5)
    words = 2000
    with ServerProcess("gprochat", config=server_config, echo={"words_per_chunk": 1}) as server:
        times = asyncio.run(_measure(server.base_url, rounds, per_round, words))
    if times is None:
        return [
            Row(
                "B5",
                "time/chunk, gateway vs /api/generate (SKIPPED: no gateway)",
                float("nan"),
                float("nan"),
                "µs",
                [],
                None,
                target_text="<= 1.3x",
            )
        ]
    # The diagnostic: the same, with every text on its own (the backend waits for the
    # event loop before each), so nothing is joined: one event and one write per text.
    paced_words = 500
    with ServerProcess(
        "gprochat", config=server_config, echo={"words_per_chunk": 1, "delay": PACED_DELAY}
    ) as server:
        paced = asyncio.run(_measure(server.base_url, rounds, per_round, paced_words))
        sent, padded = asyncio.run(_event_bytes(server.base_url, SHORT_ANSWERS))
    assert paced is not None

    def median(values: list[float]) -> float:
        return sorted(values)[len(values) // 2]

    return [
        Row(
            "B5",
            "time/chunk, gateway vs /api/generate",
            median(times["gateway"]),
            median(times["generate"]),
            "µs",
            paired_ratio(times["gateway"], times["generate"]),
            1.3,
            "lower",
            "<= 1.3x",
            note=f"{rounds} pairs x {per_round} answers of {PREFIX_WORDS + words} chunks",
        ),
        Row(
            "B5",
            "diagnostic: every text on its own (one event, one write each)",
            median(paced["gateway"]),
            median(paced["generate"]),
            "µs",
            paired_ratio(paced["gateway"], paced["generate"]),
            better="lower",
            target_text="-",
            note=(
                f"{rounds} pairs x {per_round} answers of {PREFIX_WORDS + paced_words} chunks, "
                f"the echo backend sleeping {PACED_DELAY:g} s before each: nothing is ready "
                "together, so neither route joins"
            ),
        ),
        Row(
            "B5",
            "bytes per event, 3-character delta: sent vs every field dumped (the form before)",
            statistics.median(sent),
            statistics.median(padded),
            "B",
            paired_ratio(sent, padded),
            better="lower",
            target_text="-",
            note=(
                f"{SHORT_ANSWERS} answers of ~200 events, model \"echo\"; framing (data: and "
                "the blank line) included; the baseline re-dumps each received chunk with every "
                "field the openai package defines, as the gateway sent it before"
            ),
        ),
    ]
