"""The router through our server, against several scripted upstreams on loopback.

Each upstream fails in its own way (refusing connections, 429 with Retry-After, 500,
stalling past the first-text timeout, cutting its answer, refusing a key); every
answerable request is answered exactly once, from one deployment, on both routes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gprochat import GPROChat, IncompleteResponseError
from gprochat.server import ServerConfig

from ...conftest import ServerFactory
from .conftest import ScriptedUpstream
from .test_gemini import answer as gemini_answer
from .test_openai import answer as openai_answer

Upstreams = Callable[[int], Awaitable[list[ScriptedUpstream]]]
ANSWER = "The healthy one answers."


@pytest.fixture
async def upstreams() -> AsyncIterator[Upstreams]:
    started: list[ScriptedUpstream] = []

    async def start(count: int) -> list[ScriptedUpstream]:
        for _ in range(count):
            started.append(ScriptedUpstream())
            await started[-1].start()
        return started[-count:]

    yield start
    for upstream in started:
        await upstream.stop()


def gemini(url: str, key: str = "AIza-test-key-0001", **extra: Any) -> dict[str, Any]:
    return {"backend": "gemini", "base-url": url, "api-key": key, **extra}


def router(*deployments: dict[str, Any], strategy: str = "failover", **settings: Any) -> dict[str, Any]:
    return {"router": {"cooldown": 60, **settings},
            "models": {"gemini-pro": {"strategy": strategy, "deployments": list(deployments)}}}


async def ask(base_url: str, text: str = "Hi") -> str:
    chunks = GPROChat.create_async_generator(
        "", [{"role": "user", "content": text}], base_url=base_url, max_retries=0)
    return "".join([c async for c in chunks])


async def chat(base_url: str, *, stream: bool) -> tuple[int, str]:
    body = {"model": "gemini-pro", "messages": [{"role": "user", "content": "Hi"}], "stream": stream}
    async with aiohttp.ClientSession() as session, session.post(
        base_url + "/v1/chat/completions", json=body
    ) as response:
        body = b""
        try:
            async for piece in response.content.iter_any():
                body += piece
        except aiohttp.ClientPayloadError:
            body += b"<cut>"  # the server cut the connection: how a stream says "incomplete"
        return response.status, body.decode()


def stream_text(body: str) -> str:
    texts = []
    for line in body.splitlines():
        if line.startswith("data: {"):
            for choice in json.loads(line[6:]).get("choices", []):
                texts.append(choice["delta"].get("content") or "")
    return "".join(texts)


async def healthz(base_url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(base_url + "/healthz") as response:
        return dict(await response.json())


def timed_429(upstream: ScriptedUpstream, seen: list[float], retry_after: int = 2) -> None:
    async def script(request: web.Request) -> web.StreamResponse:
        seen.append(time.monotonic())
        return web.json_response({"error": {"message": "quota"}}, status=429,
                                 headers={"Retry-After": str(retry_after)})

    upstream.respond(script)


async def test_every_broken_deployment_is_skipped_and_each_request_answered_once(
    upstreams: Upstreams, refused_url: str, make_server: ServerFactory
) -> None:
    limited, failing, stalling, healthy = await upstreams(4)
    seen_429: list[float] = []
    timed_429(limited, seen_429)
    failing.respond_error(500, {"error": {"message": "boom"}})
    stalling.respond_events([], then="stall")
    healthy.respond_events(gemini_answer("The healthy ", "one answers."))
    config = ServerConfig(router=router(
        gemini(refused_url), gemini(limited.url), gemini(failing.url),
        gemini(stalling.url, **{"first-text-timeout": 1}), gemini(healthy.url)))
    server = make_server(config)

    assert await ask(server.base_url) == ANSWER
    assert [len(u.requests) for u in (limited, failing, stalling, healthy)] == [1, 1, 1, 1]
    # The broken ones cool down: the next requests go straight to the healthy one.
    status, body = await chat(server.base_url, stream=False)
    assert (status, json.loads(body)["choices"][0]["message"]["content"]) == (200, ANSWER)
    status, body = await chat(server.base_url, stream=True)
    assert status == 200 and stream_text(body) == ANSWER and body.endswith("data: [DONE]\n\n")
    assert [len(u.requests) for u in (failing, stalling, healthy)] == [1, 1, 3]
    # No request reached the rate-limited upstream inside its Retry-After.
    assert all(later >= seen_429[0] + 2 for later in seen_429[1:])
    states = {d["name"]: d for d in (await healthz(server.base_url))["deployments"]}
    assert states["gemini-pro[1]"]["state"] in ("cooling", "half-open")
    assert [states[f"gemini-pro[{i}]"]["state"] for i in (0, 2, 3, 4)] == [
        "cooling", "cooling", "cooling", "healthy"]


async def test_every_deployment_down_answers_503_with_the_smallest_retry_after(
    upstreams: Upstreams, refused_url: str, make_server: ServerFactory
) -> None:
    (limited,) = await upstreams(1)
    timed_429(limited, [], retry_after=7)
    server = make_server(router=router(gemini(refused_url), gemini(limited.url)))
    async with aiohttp.ClientSession() as session:
        body = {"model": "gemini-pro", "messages": [{"role": "user", "content": "Hi"}]}
        async with session.post(server.base_url + "/v1/chat/completions", json=body) as response:
            error = (await response.json())["error"]
            assert response.status == 503
            assert response.headers["Retry-After"] == "7"
    assert "all 2 deployments of model 'gemini-pro' are unavailable" in error["message"]
    assert "gemini-pro[1]: rate limited" in error["message"]


async def test_a_cut_after_the_first_text_is_reported_as_cut_never_retried_elsewhere(
    upstreams: Upstreams, make_server: ServerFactory
) -> None:
    cutting, healthy = await upstreams(2)
    cutting.respond_events(gemini_answer("partial ", "more ", "never")[:2], then="abort")
    healthy.respond_events(gemini_answer(ANSWER))
    # cooldown is short so that the cutting deployment is tried again for /v1.
    server = make_server(router=router(gemini(cutting.url), gemini(healthy.url), cooldown=0.01,
                                       **{"max-cooldown": 0.01}))
    with pytest.raises(IncompleteResponseError) as info:
        await ask(server.base_url)
    assert info.value.partial_text == "partial more "
    time.sleep(0.05)
    status, body = await chat(server.base_url, stream=True)
    assert status == 200 and stream_text(body) == "partial more "
    assert '"error"' in body and body.endswith("data: [DONE]\n\n<cut>")
    assert len(cutting.requests) == 2 and healthy.requests == []


async def test_a_refused_key_is_retired_logged_once_by_fingerprint_and_never_used_again(
    upstreams: Upstreams, make_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    (upstream,) = await upstreams(1)
    bad, good = "AIza-bad-key-xxxxxxxx0001", "AIza-good-key-xxxxxxx0002"

    async def script(request: web.Request) -> web.StreamResponse:
        if request.headers["x-goog-api-key"] == bad:
            return web.json_response({"error": {"message": "API key not valid"}}, status=401)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for piece in gemini_answer(ANSWER):
            await response.write(piece)
        await response.write_eof()
        return response

    upstream.respond(script)
    server = make_server(router=router(gemini(upstream.url, key=None) | {"api-keys": [bad, good]}))
    with caplog.at_level(logging.ERROR, logger="gprochat.server.router"):
        for _ in range(4):
            assert await ask(server.base_url) == ANSWER
    used = [r.headers["x-goog-api-key"] for r in upstream.requests]
    assert used == [bad, good, good, good, good]
    retired = [r.getMessage() for r in caplog.records if "refused key" in r.getMessage()]
    assert len(retired) == 1 and "...0001" in retired[0] and bad not in caplog.text
    (state,) = (await healthz(server.base_url))["deployments"]
    assert (state["state"], state["keys"], state["retired_keys"]) == ("healthy", 2, 1)


async def test_every_key_refused_is_a_server_configuration_error(
    upstreams: Upstreams, make_server: ServerFactory
) -> None:
    (upstream,) = await upstreams(1)
    upstream.respond_error(403, {"error": {"message": "forbidden"}})
    server = make_server(router=router(gemini(upstream.url)))
    for _ in range(2):
        status, body = await chat(server.base_url, stream=False)
        assert status == 502 and "configuration" in body
    assert len(upstream.requests) == 1  # retired: never asked again


async def test_round_robin_takes_turns(upstreams: Upstreams, make_server: ServerFactory) -> None:
    trio = await upstreams(3)
    for index, upstream in enumerate(trio):
        upstream.respond_events(gemini_answer(f"from {index}"))
    server = make_server(router=router(*(gemini(u.url) for u in trio), strategy="round-robin"))
    answers = [await ask(server.base_url) for _ in range(6)]
    assert answers == ["from 0", "from 1", "from 2"] * 2


async def test_metrics_and_models_name_the_deployments(
    upstreams: Upstreams, refused_url: str, make_server: ServerFactory
) -> None:
    (healthy,) = await upstreams(1)
    healthy.respond_events(gemini_answer(ANSWER))
    config = router(gemini(refused_url), gemini(healthy.url))
    config["models"]["other"] = {"deployments": [{"backend": "echo"}]}
    server = make_server(router=config)
    assert await ask(server.base_url) == ANSWER
    async with aiohttp.ClientSession() as session:
        async with session.get(server.base_url + "/v1/models") as response:
            assert [m["id"] for m in (await response.json())["data"]] == ["gemini-pro", "other"]
        async with session.get(server.base_url + "/metrics") as response:
            metrics = await response.text()
    assert 'gprochat_deployment_requests_total{deployment="gemini-pro[0]"} 1.0' in metrics
    assert 'gprochat_deployment_failures_total{deployment="gemini-pro[0]"} 1.0' in metrics
    assert 'gprochat_deployment_failovers_total{deployment="gemini-pro[0]"} 1.0' in metrics
    assert 'gprochat_deployment_requests_total{deployment="gemini-pro[1]"} 1.0' in metrics
    assert 'gprochat_deployment_failures_total{deployment="gemini-pro[1]"}' not in metrics


async def test_the_access_log_names_the_deployment_that_answered(
    upstreams: Upstreams, refused_url: str, make_server: ServerFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    (healthy,) = await upstreams(1)
    healthy.respond_events(gemini_answer(ANSWER))
    server = make_server(router=router(gemini(refused_url), gemini(healthy.url, name="backup")))
    caplog.set_level(logging.INFO, logger="gprochat.access")
    assert await ask(server.base_url) == ANSWER
    for _ in range(200):  # the line is written just after the last byte is sent
        if any(r.name == "gprochat.access" for r in caplog.records):
            break
        await asyncio.sleep(0.02)
    (line,) = [r for r in caplog.records if r.name == "gprochat.access"]
    assert line.deployment == "backup"  # type: ignore[attr-defined]


async def test_openai_deployments_fail_over_on_a_refused_key_and_a_500(
    upstreams: Upstreams, make_server: ServerFactory
) -> None:
    refusing, failing, healthy = await upstreams(3)
    refusing.respond_error(401, {"error": {"message": "Incorrect API key provided"}})
    failing.respond_error(500, {"error": {"message": "boom"}})
    healthy.respond_events(openai_answer("Answered ", "by OpenAI."))
    server = make_server(router=router(
        *({"backend": "openai", "base-url": u.url + "/v1", "api-key": "sk-test"}
          for u in (refusing, failing, healthy))))
    for stream in (False, True):
        status, body = await chat(server.base_url, stream=stream)
        text = stream_text(body) if stream else json.loads(body)["choices"][0]["message"]["content"]
        assert (status, text) == (200, "Answered by OpenAI.")
    assert [len(u.requests) for u in (refusing, failing, healthy)] == [1, 1, 2]
    assert healthy.requests[0].json["model"] == "gemini-pro"  # the model's name, by default


async def test_a_relayed_deployment_answers_after_a_refused_one(
    refused_url: str, make_server: ServerFactory
) -> None:
    relayed = make_server()  # another GeminiProChat deployment (echo)
    server = make_server(router=router(
        {"backend": "relay", "url": refused_url},
        {"backend": "relay", "url": relayed.base_url}))
    assert (await ask(server.base_url, "relay me")).endswith("relay me")
    states = [d["state"] for d in (await healthz(server.base_url))["deployments"]]
    assert states == ["cooling", "healthy"]


async def test_the_keys_of_a_deployment_take_turns(
    upstreams: Upstreams, make_server: ServerFactory
) -> None:
    (upstream,) = await upstreams(1)
    upstream.respond_events(gemini_answer(ANSWER))
    keys = ["AIza-key-one", "AIza-key-two", "AIza-key-three"]
    server = make_server(router=router(gemini(upstream.url, key=None) | {"api-keys": keys}))
    for _ in range(6):
        assert await ask(server.base_url) == ANSWER
    assert [r.headers["x-goog-api-key"] for r in upstream.requests] == keys * 2
