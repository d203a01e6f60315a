"""The guard: bad input of every kind gets its documented 4xx, and the server keeps serving."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from gprochat.server import ServerConfig
from gprochat.server.backends import EchoBackend

from ..conftest import ServerFactory
from .helpers import error_message, image_part, png, post, signed

NO_RATE_LIMIT = {"rate_limit": None}


def _with(body: dict[str, Any], **changes: Any) -> bytes:
    return json.dumps({**body, **changes}).encode()


def _bad_inputs() -> list[tuple[str, bytes, int, str]]:
    good = signed("Hi")
    ten_minutes = 600_000
    return [
        ("empty body", b"", 400, "Empty request body"),
        ("malformed JSON", b'{"messages": [', 400, "not valid JSON"),
        ("JSON array", b"[1, 2]", 400, "must be a JSON object"),
        ("messages not a list", _with(good, messages="Hi"), 400, "Invalid message history"),
        ("no messages", _with(good, messages=[]), 400, "Invalid message history"),
        ("last message from model", _with(good, messages=[{"role": "model", "parts": []}]), 400,
         "Invalid message history"),
        ("time as a string", _with(good, time=str(good["time"])), 400, "'time'"),
        ("time missing", json.dumps({k: v for k, v in good.items() if k != "time"}).encode(), 400,
         "'time'"),
        ("sign missing", json.dumps({k: v for k, v in good.items() if k != "sign"}).encode(), 400,
         "'sign'"),
        ("pass a number", _with(good, **{"pass": 1234}), 400, "'pass'"),
        ("parts missing", _with(good, messages=[{"role": "user"}]), 400, "messages.0.parts"),
        ("text a number", _with(good, messages=[{"role": "user", "parts": [{"text": 5}]}]), 400,
         "messages.0.parts.0.text"),
        ("huge body", _with(good, padding="x" * 300_000), 413, "Request body too large"),
        ("too many messages", _with(signed("Hi", history=[{"role": "user", "parts": [{"text": "a"}]}] * 12)),
         413, "Too many messages: 13"),
        ("message too long", _with(signed("y" * 5_001)), 413, "messages.0 has 5001 characters"),
        ("stale timestamp", _with(signed("Hi", timestamp=int(time.time() * 1000) - ten_minutes)),
         401, "seconds (behind"),  # about 600: signed now, posted after the probes before it
        ("future timestamp", _with(signed("Hi", timestamp=int(time.time() * 1000) + ten_minutes)),
         401, "seconds (ahead"),
        ("wrong password", _with(signed("Hi", password="guess")), 401, "Invalid password."),
        ("wrong signature", _with(signed("Hi", secret="not-the-secret")), 401, "Invalid signature."),
    ]


async def test_bad_inputs_get_their_documented_4xx_and_the_server_keeps_serving(
    make_server: ServerFactory,
) -> None:
    server = make_server(
        max_body_bytes=200_000, max_messages=10, max_message_chars=5_000,
        **NO_RATE_LIMIT,
    )
    for name, raw, status, expected in _bad_inputs():
        if name == "wrong password":
            continue  # this server has no password; see the next test
        got_status, _, body = await post(server.base_url, raw)
        assert (name, got_status) == (name, status)
        assert expected in error_message(body), name
    got_status, _, body = await post(server.base_url, signed("still here"))
    assert got_status == 200 and body.decode().endswith("still here")


async def test_wrong_password_then_right_one(make_server: ServerFactory) -> None:
    server = make_server(passwords=("open sesame", "other"), **NO_RATE_LIMIT)
    status, _, body = await post(server.base_url, signed("Hi", password="guess"))
    assert (status, error_message(body)) == (401, "Invalid password.")
    status, _, _ = await post(server.base_url, signed("Hi", password="other"))
    assert status == 200


async def test_replayed_signature_gets_409_and_a_fresh_one_works(make_server: ServerFactory) -> None:
    server = make_server(**NO_RATE_LIMIT)
    body = signed("once")
    assert (await post(server.base_url, body))[0] == 200
    status, _, raw = await post(server.base_url, body)
    assert status == 409
    assert error_message(raw).startswith("Signature already used")
    assert (await post(server.base_url, signed("once", timestamp=body["time"] + 1)))[0] == 200


async def test_forged_requests_cannot_probe_the_clock_or_spend_signatures(
    make_server: ServerFactory,
) -> None:
    server = make_server(passwords=("pw",), **NO_RATE_LIMIT)
    stale = signed("Hi", password="pw", secret="forged", timestamp=1)
    status, _, raw = await post(server.base_url, stale)
    assert (status, error_message(raw)) == (401, "Invalid signature.")
    wrong_password_stale = signed("Hi", password="nope", timestamp=1)
    assert error_message((await post(server.base_url, wrong_password_stale))[2]) == "Invalid password."
    # A forged copy of a real signature is refused as forged and does not use it up.
    real = signed("Hi", password="pw")
    forged = {**real, "messages": [{"role": "user", "parts": [{"text": "Other"}]}]}
    assert error_message((await post(server.base_url, forged))[2]) == "Invalid signature."
    assert (await post(server.base_url, real))[0] == 200


async def test_window_zero_turns_the_window_and_replay_protection_off(
    make_server: ServerFactory,
) -> None:
    server = make_server(timestamp_window=0, **NO_RATE_LIMIT)
    old = signed("Hi", timestamp=1693631200000)
    assert (await post(server.base_url, old))[0] == 200
    assert (await post(server.base_url, old))[0] == 200


async def test_chunked_body_over_the_limit_gets_413(make_server: ServerFactory) -> None:
    server = make_server(max_body_bytes=10_000, **NO_RATE_LIMIT)

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(100):  # no Content-Length: the server counts as it reads
            yield b"x" * 1_000

    url = server.base_url + "/api/generate"
    async with aiohttp.ClientSession() as session, session.post(url, data=chunks()) as response:
        assert response.status == 413
        assert "at most 10000" in error_message(await response.read())
    assert (await post(server.base_url, signed()))[0] == 200


async def test_flood_gets_429_with_retry_after_per_client(make_server: ServerFactory) -> None:
    server = make_server(rate_limit="5/minute", trusted_proxies=("127.0.0.1",))
    statuses = [(await post(server.base_url, signed(f"n{i}")))[0] for i in range(5)]
    assert statuses == [200] * 5
    status, headers, raw = await post(server.base_url, signed("one too many"))
    assert status == 429
    assert 1 <= int(headers["Retry-After"]) <= 60
    assert "allows 5 per minute" in error_message(raw)
    # Malformed requests count too: a flood of garbage is still a flood.
    assert (await post(server.base_url, b"garbage"))[0] == 429
    # Another client behind the trusted proxy has its own budget.
    other = {"X-Forwarded-For": "203.0.113.9"}
    assert (await post(server.base_url, signed("other client"), headers=other))[0] == 200
    # The server keeps serving everything else.
    async with aiohttp.ClientSession() as session, session.get(server.base_url + "/healthz") as response:
        assert response.status == 200


async def test_forwarded_for_is_ignored_from_an_untrusted_peer(make_server: ServerFactory) -> None:
    server = make_server(rate_limit="2/minute")  # no trusted proxies
    for i in range(2):
        spoofed = {"X-Forwarded-For": f"198.51.100.{i}"}
        assert (await post(server.base_url, signed(f"n{i}"), headers=spoofed))[0] == 200
    status, _, _ = await post(server.base_url, signed("n3"), headers={"X-Forwarded-For": "192.0.2.1"})
    assert status == 429


async def test_auth_route_is_rate_limited_against_password_guessing(make_server: ServerFactory) -> None:
    server = make_server(passwords=("pw",), rate_limit="3/minute")
    for guess in ("a", "b", "c"):
        assert (await post(server.base_url, {"pass": guess}, "/api/auth"))[0] == 200
    status, headers, _ = await post(server.base_url, {"pass": "pw"}, "/api/auth")
    assert status == 429 and "Retry-After" in headers


async def test_streams_beyond_the_limit_get_503_and_slots_are_released(
    make_server: ServerFactory,
) -> None:
    config = ServerConfig(max_streams=1, busy_retry_after=2, rate_limit=None)
    server = make_server(config, backend=EchoBackend(delay=0.1, words_per_chunk=1))
    async with aiohttp.ClientSession() as session:
        data = json.dumps(signed("one two three four five six")).encode()
        async with session.post(server.base_url + "/api/generate", data=data) as slow:
            assert slow.status == 200
            status, headers, raw = await post(server.base_url, signed("second"))
            assert status == 503
            assert headers["Retry-After"] == "2"
            assert "server is busy" in error_message(raw)
            await slow.read()
    assert (await post(server.base_url, signed("after")))[0] == 200
    # A client that goes away mid-answer gives its slot back too.
    async with aiohttp.ClientSession() as session:
        data = json.dumps(signed("one two three four five six seven")).encode()
        async with session.post(server.base_url + "/api/generate", data=data) as response:
            await response.content.readany()
    for _ in range(50):
        status, _, _ = await post(server.base_url, signed("again"))
        if status == 200:
            break
        await asyncio.sleep(0.1)
    assert status == 200



def test_memory_moving_window_exact_boundaries_and_reset() -> None:
    from limits import parse

    from gprochat.server.guard import MemoryMovingWindow

    now = [1000.0]
    window = MemoryMovingWindow(clock=lambda: now[0])
    item = parse("3/second")
    hits = []
    for when in (1000.0, 1000.5, 1000.6, 1000.7):
        now[0] = when
        hits.append(window.hit(item, "generate", "a"))
    assert hits == [True, True, True, False]
    # A refused hit is not counted; another key and another route have their own budgets.
    assert window.hit(item, "generate", "b") and window.hit(item, "auth", "a")
    stats = window.get_window_stats(item, "generate", "a")
    assert (stats.reset_time, stats.remaining) == (1001.0, 0)
    now[0] = 1000.999  # the oldest hit is still inside the window
    assert not window.hit(item, "generate", "a")
    now[0] = 1001.0  # now it has left it: exactly one more is allowed
    assert window.hit(item, "generate", "a")
    assert not window.hit(item, "generate", "a")
    # Keys with no hit in their window are forgotten: memory is bounded by recent clients.
    now[0] = 1010.0
    assert window.hit(item, "generate", "c")
    assert len(window) == 1


async def test_identical_prompts_sent_at_once_are_all_answered(make_server: ServerFactory) -> None:
    # Same text, same secret: without distinct timestamps, two signatures made in the
    # same millisecond are equal and the replay check refuses the second with 409.
    from gprochat import GPROChat

    server = make_server(**NO_RATE_LIMIT)
    messages = [{"role": "user", "content": "Same question"}]
    answers = await asyncio.gather(
        *(GPROChat.create_async("", messages, base_url=server.base_url, max_retries=0) for _ in range(30))
    )
    assert all(answer.endswith("Same question") for answer in answers)


def _empty_parts_bodies(count: int) -> dict[str, bytes]:
    """Issue 16's attack on each route: ``count`` empty text parts and one real one."""
    generate = signed("hi")
    generate["messages"][-1]["parts"] = [{"text": ""}] * count + [{"text": "hi"}]
    parts = [{"type": "text", "text": ""}] * count + [{"type": "text", "text": "hi"}]
    completion = {"model": "echo", "messages": [{"role": "user", "content": parts}]}
    return {"/api/generate": json.dumps(generate).encode(),
            "/v1/chat/completions": json.dumps(completion).encode()}


async def test_half_a_million_empty_parts_get_413_and_healthz_answers(
    make_server: ServerFactory,
) -> None:
    """The default limits: counted before validation, named, and the server keeps serving."""
    server = make_server(**NO_RATE_LIMIT)
    config = ServerConfig()
    for path, body in _empty_parts_bodies(500_000).items():
        assert len(body) <= config.max_body_bytes  # refused for its parts, not its size
        headers = {"Content-Type": "application/json"}

        async def healthz() -> int:
            async with aiohttp.ClientSession() as session, session.get(
                server.base_url + "/healthz"
            ) as response:
                return response.status

        (status, _, raw), health = await asyncio.gather(
            post(server.base_url, body, path, headers), healthz()
        )
        assert health == 200
        assert status == 413, raw[:500]
        message = json.loads(raw)["error"]["message"]
        assert message.startswith(
            f"Too many content parts: 500001 in the request's messages; this server accepts "
            f"at most {config.max_parts} per request (--max-parts)"
        ), message


async def test_the_default_part_limit_admits_every_conversation_the_other_limits_do(
    make_server: ServerFactory,
) -> None:
    """max_messages messages of one text part each, the last with max_images images too."""
    config = ServerConfig()
    server = make_server(**NO_RATE_LIMIT)
    history = [{"role": ("user", "model")[i % 2], "parts": [{"text": f"turn {i}"}]}
               for i in range(config.max_messages - 1)]
    images = [image_part(png(64, seed)) for seed in range(config.max_images)]
    status, _, raw = await post(server.base_url, signed("hi", history=history, images=images))
    assert status == 200, raw[:500]
    assert raw.count(b"[image ") == config.max_images
    assert config.max_parts >= config.max_messages + config.max_images


async def test_max_parts_zero_turns_the_count_off(make_server: ServerFactory) -> None:
    server = make_server(max_parts=0, **NO_RATE_LIMIT)
    body = _empty_parts_bodies(2_000)["/api/generate"]
    status, _, raw = await post(server.base_url, body)
    assert status == 200 and raw.endswith(b": hi"), raw[:200]


async def test_empty_parts_and_null_content_name_the_message(make_server: ServerFactory) -> None:
    server = make_server(**NO_RATE_LIMIT)
    body = signed("hi", history=[{"role": "user", "parts": [{"text": "a"}]},
                                 {"role": "model", "parts": []}])
    status, _, raw = await post(server.base_url, body)
    assert status == 400
    assert error_message(raw).startswith("messages[1].parts is empty: a message holds at least one part")
    completion = {"model": "echo", "messages": [{"role": "system", "content": "Be brief."},
                                                {"role": "user", "content": None}]}
    status, _, raw = await post(server.base_url, completion, "/v1/chat/completions",
                                {"Content-Type": "application/json"})
    assert status == 400
    error = json.loads(raw)["error"]
    assert error["message"].startswith("messages[1].content is null or missing: a user message")
    assert error["param"] == "messages[1].content"
