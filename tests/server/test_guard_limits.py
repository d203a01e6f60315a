"""The guard's parts one by one: exact size limits, a trusted proxy chain, separate rate
budgets per route, the Redis failure policy, the stream slots.

Requests are Starlette's own ``Request`` over an ASGI scope and a ``receive`` that plays
the body in chunks, so the guard reads them exactly as it reads a server's.
"""

from __future__ import annotations

import gc
import itertools
import logging
import time
from collections.abc import AsyncIterator, Sequence

import pytest
from limits import parse
from starlette.requests import Request

from gprochat.errors import SharedStateError
from gprochat.server.guard import (
    FailurePolicy,
    MemoryMovingWindow,
    RateLimiter,
    Rejected,
    RequestGuard,
    StreamLimiter,
    client_address,
    client_address_of_scope,
    parse_networks,
)
from gprochat.server.stores import SharedState

PEER = "198.51.100.7"



def _request(
    headers: Sequence[tuple[str, str]] = (),
    chunks: Sequence[bytes] = (b"",),
    client: tuple[str, int] | None = (PEER, 40000),
    disconnect: bool = False,
) -> Request:
    scope = {
        "type": "http", "method": "POST", "path": "/api/generate", "raw_path": b"/api/generate",
        "query_string": b"", "root_path": "", "scheme": "http", "http_version": "1.1",
        "server": ("127.0.0.1", 8000), "client": client,
        "headers": [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers],
    }
    messages = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
        for i, chunk in enumerate(chunks)
    ]
    if disconnect:
        messages = [*messages[:-1], {"type": "http.disconnect"}]

    async def receive() -> dict[str, object]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    return Request(scope, receive)


def _rejected(call: object) -> Rejected:
    with pytest.raises(Rejected) as caught:
        call()  # type: ignore[operator]
    return caught.value


# --- Rejected and the failure policy ----------------------------------------------------

def test_rejected_carries_status_message_headers() -> None:
    exc = Rejected(418, "short and stout")
    assert (exc.status, exc.message, exc.headers, str(exc)) == (418, "short and stout", {}, "short and stout")


def _down() -> SharedStateError:
    return SharedStateError("Redis failed: down", operation="rate limit")


def test_failure_policy_closed_refuses_with_503(caplog: pytest.LogCaptureFixture) -> None:
    policy = FailurePolicy("closed")
    assert (policy.mode, policy.log_every) == ("closed", 10.0)
    with caplog.at_level(logging.ERROR, logger="gprochat.server.guard"):
        exc = _rejected(lambda: policy.handle(_down()))
    assert exc.status == 503 and exc.headers == {"Retry-After": "5"}
    assert "refuses requests until it can (fail-closed). Retry in 5 seconds" in exc.message
    assert isinstance(exc.__cause__, SharedStateError)
    assert exc.message.startswith(
        "The server cannot reach its shared state store (Redis) to check rate limits and replays, "
    )
    assert [r.getMessage() for r in caplog.records] == [
        "shared state unreachable during the rate limit: Redis failed: down; refusing requests "
        "with 503 (fail-closed)"
    ]


def test_failure_policy_open_serves_and_logs_at_most_every_interval(caplog: pytest.LogCaptureFixture) -> None:
    policy = FailurePolicy("open")
    with caplog.at_level(logging.ERROR, logger="gprochat.server.guard"):
        assert policy.handle(_down()) is None
        assert policy.handle(_down()) is None
    assert [r.getMessage() for r in caplog.records] == [
        "shared state unreachable during the rate limit: Redis failed: down; serving without it (fail-open)"
    ]
    often = FailurePolicy("open", log_every=0)
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="gprochat.server.guard"):
        often.handle(_down())
        often.handle(_down())
    assert caplog.text.count("fail-open") == 2


# --- addresses and the trusted proxy chain ------------------------------------------------

def test_parse_networks() -> None:
    assert parse_networks([" 10.1.2.3/8 ", "192.0.2.1", "::1"]) == (
        parse_networks(["10.0.0.0/8"])[0], parse_networks(["192.0.2.1/32"])[0], parse_networks(["::1/128"])[0]
    )
    with pytest.raises(ValueError) as caught:
        parse_networks(["10.0.0.0/8", "proxy.example"])
    assert str(caught.value) == "trusted proxy 'proxy.example' is not an IP address or network"


PROXIES = parse_networks(["10.0.0.0/8", "192.168.1.1"])


def _address(headers: Sequence[tuple[str, str]], peer: str | None = "10.0.0.2",
             trusted: tuple[object, ...] = PROXIES) -> str:
    scope = _request(headers, client=(peer, 1) if peer else None).scope
    return client_address_of_scope(scope, trusted)  # type: ignore[arg-type]


def test_the_peer_when_no_proxy_is_trusted() -> None:
    assert _address([("X-Forwarded-For", "1.2.3.4")], peer=PEER, trusted=()) == PEER
    assert client_address(_request([("X-Forwarded-For", "1.2.3.4")])) == PEER


def test_an_untrusted_peer_cannot_forge_its_address() -> None:
    assert _address([("X-Forwarded-For", "1.2.3.4")], peer=PEER) == PEER


def test_no_client_is_unknown() -> None:
    assert _address([], peer=None, trusted=()) == "unknown"
    assert _address([("X-Forwarded-For", "1.2.3.4")], peer=None) == "unknown"


def test_the_chain_is_read_right_to_left_skipping_trusted_proxies() -> None:
    assert _address([("X-Forwarded-For", "6.6.6.6, 1.2.3.4, 10.9.9.9, 192.168.1.1")]) == "1.2.3.4"
    assert _address([("X-Forwarded-For", "1.2.3.4,10.9.9.9")]) == "1.2.3.4"


def test_several_forwarded_headers_are_one_chain() -> None:
    headers = [("X-Forwarded-For", "6.6.6.6, 1.2.3.4"), ("X-Forwarded-For", "10.1.1.1")]
    assert _address(headers) == "1.2.3.4"


def test_an_all_trusted_chain_is_the_peer() -> None:
    assert _address([("X-Forwarded-For", "10.1.1.1, 192.168.1.1")]) == "10.0.0.2"
    assert _address([("X-Forwarded-For", " , ")]) == "10.0.0.2"
    assert _address([]) == "10.0.0.2"


def test_a_hop_that_is_not_an_address_is_not_trusted() -> None:
    assert _address([("X-Forwarded-For", "1.2.3.4, garbage")]) == "garbage"
    assert _address([("X-Forwarded-For", "1.2.3.4")], peer="not-an-ip") == "not-an-ip"


# --- rate limits ----------------------------------------------------------------------

def _limiter(limit: str | None, state: SharedState | None = None, mode: str = "closed",
             trusted: tuple[object, ...] = ()) -> RateLimiter:
    return RateLimiter(limit, state or SharedState(), FailurePolicy(mode), trusted)  # type: ignore[arg-type]


async def _statuses(limiter: RateLimiter, count: int, route: str | None = None,
                    request: Request | None = None) -> list[int]:
    statuses = []
    for _ in range(count):
        try:
            if route is None:
                await limiter.check(request or _request())
            else:
                await limiter.check(request or _request(), route)
            statuses.append(200)
        except Rejected as exc:
            statuses.append(exc.status)
    return statuses


@pytest.fixture(params=["memory", "redis"])
async def state(request: pytest.FixtureRequest) -> AsyncIterator[SharedState]:
    """The two paths a rate check takes: the guard's own window in memory, and limits'
    over a real Redis (started by the ``redis_server`` fixture)."""
    if request.param == "memory":
        yield SharedState()
        return
    shared = SharedState(request.getfixturevalue("redis_server").url)
    try:
        yield shared
    finally:
        await shared.aclose()
        del shared
        gc.collect()  # an unclosed connection would be reported here, as a warning (an error)


async def test_the_limit_is_exact(state: SharedState) -> None:
    assert await _statuses(_limiter("3/minute", state), 4, "generate") == [200, 200, 200, 429]


async def test_each_route_has_its_own_budget(state: SharedState) -> None:
    limiter = _limiter("2/minute", state)
    assert await _statuses(limiter, 3, "generate") == [200, 200, 429]
    assert await _statuses(limiter, 3, "auth") == [200, 200, 429]
    assert await _statuses(limiter, 3, "gateway") == [200, 200, 429]


async def test_the_default_budget_is_generate(state: SharedState) -> None:
    limiter = _limiter("2/minute", state)
    assert await _statuses(limiter, 2, "generate") == [200, 200]
    assert await _statuses(limiter, 1) == [429]


async def test_each_client_has_its_own_budget(state: SharedState) -> None:
    limiter = _limiter("1/minute", state)
    assert await _statuses(limiter, 2, request=_request(client=("192.0.2.1", 1))) == [200, 429]
    assert await _statuses(limiter, 1, request=_request(client=("192.0.2.2", 1))) == [200]


async def test_behind_a_trusted_proxy_the_forwarded_client_is_counted(state: SharedState) -> None:
    limiter = _limiter("1/minute", state, trusted=parse_networks(["10.0.0.0/8"]))
    first = _request([("X-Forwarded-For", "192.0.2.1")], client=("10.0.0.2", 1))
    second = _request([("X-Forwarded-For", "192.0.2.2")], client=("10.0.0.2", 1))
    assert await _statuses(limiter, 2, "generate", first) == [200, 429]
    assert await _statuses(limiter, 1, "generate", second) == [200]


async def test_the_429_message_and_retry_after(state: SharedState) -> None:
    limiter = _limiter("2/minute", state)
    await _statuses(limiter, 2, "generate")
    started = time.time()
    with pytest.raises(Rejected) as caught:
        await limiter.check(_request(), "generate")
    retry_after = int(caught.value.headers["Retry-After"])
    assert set(caught.value.headers) == {"Retry-After"}
    assert 50 <= retry_after <= 60 + (time.time() - started) + 1
    assert caught.value.message == (
        f"Too many requests: this server allows 2 per minute from one client. "
        f"Retry after {retry_after} seconds."
    )


async def test_retry_after_counts_from_the_oldest_request_in_the_window(state: SharedState) -> None:
    """The wait is until the oldest counted request leaves the window, not a whole window."""
    limiter = _limiter("2 per 10 seconds", state)
    await _statuses(limiter, 1, "generate")
    time.sleep(1.5)
    await _statuses(limiter, 1, "generate")
    with pytest.raises(Rejected) as caught:
        await limiter.check(_request(), "generate")
    assert 1 <= int(caught.value.headers["Retry-After"]) <= 9


async def test_retry_after_is_at_least_one_second(state: SharedState) -> None:
    limiter = _limiter("1/second", state)
    await _statuses(limiter, 1, "generate")
    with pytest.raises(Rejected) as caught:
        await limiter.check(_request(), "generate")
    assert caught.value.headers == {"Retry-After": "1"}
    assert "allows 1 per second from one client" in caught.value.message


async def test_a_window_of_several_units_is_named(state: SharedState) -> None:
    limiter = _limiter("1 per 5 minutes", state)
    await _statuses(limiter, 1, "generate")
    with pytest.raises(Rejected) as caught:
        await limiter.check(_request(), "generate")
    assert "allows 1 per 5 minutes from one client" in caught.value.message


async def test_no_limit() -> None:
    assert await _statuses(_limiter(None), 50, "generate") == [200] * 50


async def test_an_unreachable_redis_fails_closed_or_open() -> None:
    dead = "redis://127.0.0.1:1/0"
    for mode, expected in (("closed", [503]), ("open", [200, 200, 200])):
        state = SharedState(dead)
        try:
            assert await _statuses(_limiter("5/minute", state, mode), len(expected), "generate") == expected
        finally:
            await state.aclose()
            del state
            gc.collect()


# --- the in-memory moving window, on a clock of our own ---------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_moving_window_edges() -> None:
    clock = Clock()
    window = MemoryMovingWindow(clock)
    item = parse("2/minute")
    assert window.hit(item, "generate", "a") and window.hit(item, "generate", "a")
    assert not window.hit(item, "generate", "a")
    clock.now += 59.999
    assert not window.hit(item, "generate", "a")
    clock.now = 1_060.0  # exactly a window after both hits: they have left it
    assert window.hit(item, "generate", "a") and window.hit(item, "generate", "a")
    assert not window.hit(item, "generate", "a")


def test_moving_window_refusals_are_not_counted() -> None:
    clock = Clock()
    window = MemoryMovingWindow(clock)
    item = parse("1/minute")
    assert window.hit(item, "k")
    for _ in range(5):
        clock.now += 10
        assert not window.hit(item, "k")
    clock.now = 1_060.0
    assert window.hit(item, "k")


def test_moving_window_stats() -> None:
    clock = Clock()
    window = MemoryMovingWindow(clock)
    item = parse("3/minute")
    assert window.get_window_stats(item, "k") == (1_060.0, 3)
    window.hit(item, "k")
    clock.now = 1_020.0
    window.hit(item, "k")
    clock.now = 1_030.0
    assert window.get_window_stats(item, "k") == (1_060.0, 1)
    clock.now = 1_070.0  # the first hit has left the window
    assert window.get_window_stats(item, "k") == (1_080.0, 2)
    clock.now = 1_080.0  # the second is exactly a window old: it has left too
    assert window.get_window_stats(item, "k") == (1_140.0, 3)
    assert window.get_window_stats(item, "other") == (1_140.0, 3)


def test_moving_window_keys_apart() -> None:
    window = MemoryMovingWindow(Clock())
    item = parse("1/minute")
    assert window.hit(item, "generate", "a")
    assert window.hit(item, "auth", "a")
    assert window.hit(item, "generate", "b")
    assert not window.hit(item, "generate", "a")
    assert window.hit(parse("1/hour"), "generate", "a")  # another limit, another key


def test_moving_window_forgets_clients_once_their_last_hit_has_left_the_window() -> None:
    clock = Clock()
    window = MemoryMovingWindow(clock)
    item = parse("5/minute")
    for client in "abc":
        window.hit(item, client)
    assert len(window) == 3
    clock.now = 1_030.0
    window.hit(item, "d")
    assert len(window) == 4  # a, b, c were hit 30 s ago: still in their window
    clock.now = 1_060.0
    window.hit(item, "e")  # a, b, c are exactly a window old: forgotten; d is not
    assert len(window) == 2
    clock.now = 1_090.0
    window.hit(item, "f")  # d (1030) has left its window
    assert len(window) == 2
    clock.now = 1_120.0
    window.hit(item, "g")
    assert len(window) == 2  # e (1060) left too: f, g
    assert window.get_window_stats(item, "e") == (1_180.0, 5)


def test_moving_window_forgets_a_few_idle_clients_per_hit_and_stays_bounded() -> None:
    clock = Clock()
    window = MemoryMovingWindow(clock)
    item = parse("5/minute")
    for client in range(1_000):
        assert window.hit(item, f"old-{client}")
    clock.now += 61  # all of them have left their window
    sizes = [len(window)]
    for client in range(400):
        assert window.hit(item, f"new-{client}")
        sizes.append(len(window))
    # Each hit forgets a bounded number of keys (no pass over every client) ...
    assert all(before - after <= MemoryMovingWindow.FORGET_PER_HIT - 1
               for before, after in itertools.pairwise(sizes))
    # ... and together they have forgotten every idle client: only the new ones remain.
    assert len(window) == 400
    # A client that keeps hitting stays, wherever it was; one over its limit is kept too.
    clock.now += 61
    for _ in range(5):
        assert window.hit(item, "busy")
    assert not window.hit(item, "busy")
    for client in range(200):
        window.hit(item, f"later-{client}")
    assert window.get_window_stats(item, "busy").remaining == 0
    assert len(window) == 201


# --- stream slots ---------------------------------------------------------------------

def test_stream_slots() -> None:
    changes: list[int] = []
    streams = StreamLimiter(2, on_change=changes.append)
    assert streams.retry_after == 1
    release_one = streams.try_acquire()
    release_two = streams.try_acquire()
    assert streams.in_flight == 2
    exc = _rejected(streams.try_acquire)
    assert exc.status == 503 and exc.headers == {"Retry-After": "1"}
    assert "2 answers" in exc.message and exc.message.endswith("Retry after 1 seconds.")
    release_one()
    release_one()  # idempotent
    assert streams.in_flight == 1
    release_three = streams.try_acquire()
    assert streams.in_flight == 2
    release_three()
    release_two()
    assert streams.in_flight == 0
    assert changes == [1, 1, -1, 1, -1, -1]


def test_stream_slots_retry_after() -> None:
    streams = StreamLimiter(1, retry_after=7)
    streams.try_acquire()
    assert _rejected(streams.try_acquire).headers == {"Retry-After": "7"}


def test_no_stream_limit() -> None:
    streams = StreamLimiter(0)
    for _ in range(100):
        streams.try_acquire()
    assert streams.in_flight == 100


# --- body size ------------------------------------------------------------------------

def _guard(max_body_bytes: int) -> RequestGuard:
    return RequestGuard(rate_limiter=_limiter(None), streams=StreamLimiter(0), max_body_bytes=max_body_bytes)


def test_declared_size_limit_is_exact() -> None:
    guard = _guard(100)
    guard.check_declared_size(_request([("Content-Length", "100")]))
    guard.check_declared_size(_request([]))
    guard.check_declared_size(_request([("Content-Length", "junk")]))
    exc = _rejected(lambda: guard.check_declared_size(_request([("Content-Length", "101")])))
    assert exc.status == 413
    assert exc.message == (
        "Request body too large: 101 bytes; this server accepts at most 100. Send a shorter "
        "conversation, or fewer or smaller images."
    )
    _guard(0).check_declared_size(_request([("Content-Length", str(10**12))]))


async def test_actual_size_limit_is_exact_over_several_chunks() -> None:
    guard = _guard(100)
    assert await guard.read_body(_request(chunks=[b"a" * 60, b"b" * 40])) == b"a" * 60 + b"b" * 40
    with pytest.raises(Rejected) as caught:
        await guard.read_body(_request(chunks=[b"a" * 60, b"b" * 41]))
    assert caught.value.status == 413
    assert caught.value.message == (
        "Request body too large: at least 101 bytes; this server accepts at most 100. "
        "Send a shorter conversation, or fewer or smaller images."
    )
    assert await _guard(0).read_body(_request(chunks=[b"x" * 1000] * 5)) == b"x" * 5000


async def test_a_client_gone_mid_body_is_a_400() -> None:
    with pytest.raises(Rejected) as caught:
        await _guard(100).read_body(_request(chunks=[b"abc", b"def"], disconnect=True))
    assert (caught.value.status, caught.value.message) == (
        400, "The client disconnected before sending the whole body."
    )


# --- conversation limits, passwords, bearer tokens, admission -----------------------------

def _full_guard(**options: object) -> RequestGuard:
    settings: dict[str, object] = {
        "rate_limiter": _limiter(None), "streams": StreamLimiter(0), "max_body_bytes": 100, **options
    }
    return RequestGuard(**settings)  # type: ignore[arg-type]


def test_conversation_limits_are_exact() -> None:
    guard = _full_guard(max_messages=3, max_message_chars=5)
    guard.check_conversation(["12345", "a", "b"])
    exc = _rejected(lambda: guard.check_conversation(["a", "b", "c", "d"]))
    assert (exc.status, exc.message) == (
        413, "Too many messages: 4; this server accepts at most 3. Drop the oldest turns of the conversation."
    )
    exc = _rejected(lambda: guard.check_conversation(["a", "123456"]))
    assert (exc.status, exc.message) == (
        413, "Message too long: messages.1 has 6 characters; this server accepts at most 5 per message. "
        "Shorten it.",
    )
    exc = _rejected(lambda: guard.check_conversation(["123456"], where="messages[{index}].content"))
    assert "messages[0].content has 6 characters" in exc.message


def test_no_conversation_limits() -> None:
    _full_guard().check_conversation(["x" * 10_000] * 1_000)


def test_check_password_any_entry() -> None:
    guard = _full_guard(passwords=("one", "two"))
    guard.check_password("one")
    guard.check_password("two")
    for wrong in ("three", None, ""):
        exc = _rejected(lambda wrong=wrong: guard.check_password(wrong))
        assert (exc.status, exc.message) == (401, "Invalid password.")
    _full_guard().check_password(None)


def _bearer(guard: RequestGuard, value: str | None) -> None:
    guard.check_bearer(_request([("Authorization", value)] if value is not None else []))


def test_bearer_takes_an_api_key_or_a_site_password() -> None:
    guard = _full_guard(passwords=("site-pw",), api_keys=("key-1", "key-2"))
    for token in ("key-1", "key-2", "site-pw"):
        _bearer(guard, f"Bearer {token}")
        _bearer(guard, f"bearer   {token}  ")
    only_password = _full_guard(passwords=("site-pw",))
    _bearer(only_password, "Bearer site-pw")


@pytest.mark.parametrize("value", [None, "", "Bearer", "Bearer    ", "Basic key-1", "key-1"])
def test_bearer_missing(value: str | None) -> None:
    exc = _rejected(lambda: _bearer(_full_guard(api_keys=("key-1",)), value))
    assert exc.status == 401 and exc.headers == {"WWW-Authenticate": "Bearer"}
    assert exc.message == (
        "Missing API key: this server is locked. Send 'Authorization: Bearer KEY' with one of its API "
        "keys or the site password (with the OpenAI SDK: api_key=...)."
    )


@pytest.mark.parametrize("value", ["Bearer key-3", "Bearer key-1x", "Bearer site-pwd"])
def test_bearer_wrong(value: str) -> None:
    exc = _rejected(lambda: _bearer(_full_guard(passwords=("site-pw",), api_keys=("key-1",)), value))
    assert exc.status == 401 and exc.headers == {"WWW-Authenticate": "Bearer"}
    assert exc.message == (
        "Incorrect API key: it is neither one of this server's API keys (--api-key) nor its site password."
    )


def test_bearer_open_without_keys_or_passwords() -> None:
    _bearer(_full_guard(), None)
    _bearer(_full_guard(), "Bearer anything")


async def test_admit_checks_in_order_and_returns_the_body() -> None:
    guard = _full_guard(api_keys=("k",), rate_limiter=_limiter("1/minute"))
    ok = _request([("Authorization", "Bearer k"), ("Content-Length", "2")], chunks=[b"{}"])
    assert await guard.admit(ok, "gateway", bearer=True) == b"{}"
    # The budget is spent: 429 comes before the bearer check.
    with pytest.raises(Rejected) as caught:
        await guard.admit(_request([]), "gateway", bearer=True)
    assert caught.value.status == 429
    # Another route's budget is untouched; without ``bearer`` no key is asked for.
    assert await guard.admit(_request([], chunks=[b"x"]), "auth") == b"x"
    # The declared size comes first of all.
    with pytest.raises(Rejected) as caught:
        await guard.admit(_request([("Content-Length", "101")]), "generate")
    assert caught.value.status == 413


async def test_admit_refuses_a_missing_bearer_within_budget() -> None:
    guard = _full_guard(api_keys=("k",))
    with pytest.raises(Rejected) as caught:
        await guard.admit(_request([]), "gateway", bearer=True)
    assert caught.value.status == 401
    with pytest.raises(Rejected) as caught:
        await guard.admit(_request([("Authorization", "Bearer k")], chunks=[b"x" * 101]), "gateway",
                          bearer=True)
    assert caught.value.status == 413
