"""The one guard every route passes: size, rate, conversation limits, credentials, slots.

Each check raises a ``refusals.Refusal`` (status, message, headers); the front door
(``server/front.py``) answers it in the route's error shape (``Refusal.response``):
the protocol's
``{"error": {"message": ...}}`` on ``/api/*``, OpenAI's on ``/v1``. Every route
admits a request through the same ``RequestGuard`` (on ``app.state.guard``), in
this order::

    body = await guard.admit(request, "generate")   # 413 declared size, 429 rate (the
                                                     # route's own budget), 401 bearer
                                                     # (gateway), 413 actual size
    ...parse the body's JSON...                      # 400, the route's own
    guard.check_part_count(data, "parts")            # 413 content parts, before any model
    ...validate it...                                # 400, the route's own
    guard.check_conversation(texts)                  # 413 messages / message length
    guard.check_password(given)                      # 401 (/api/generate: in the body)
    release = guard.streams.try_acquire()            # 503 + Retry-After
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal, NoReturn

from limits import RateLimitItem, WindowStats, parse
from limits.aio.strategies import MovingWindowRateLimiter
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect, Request
from starlette.types import Scope

from .. import protocol
from ..errors import ImageError, SharedStateError
from ..images import Base64Run, Image
from .refusals import Refusal
from .stores import SharedState, translate_rate_storage_error

__all__ = [
    "FailurePolicy",
    "MemoryMovingWindow",
    "Network",
    "RateLimiter",
    "Rejected",
    "RequestGuard",
    "StreamLimiter",
    "client_address",
    "client_address_of_scope",
    "parse_networks",
]

logger = logging.getLogger("gprochat.server.guard")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


#: The guard's name for a ``Refusal`` (kept for code that imports it from here).
Rejected = Refusal


class FailurePolicy:
    """What to do when the shared store (Redis) fails: serve anyway, or refuse with 503.

    Either way the log says which, and why (at most once every ``log_every`` seconds,
    so that a dead Redis does not flood the log).
    """

    RETRY_AFTER = 5

    def __init__(self, mode: Literal["open", "closed"], *, log_every: float = 10.0) -> None:
        self.mode = mode
        self.log_every = log_every
        self._last_log = -math.inf

    def handle(self, exc: SharedStateError) -> None:
        """Return to serve without the check (fail open) or raise ``Refusal`` (closed)."""
        now = time.monotonic()
        if now - self._last_log >= self.log_every:
            self._last_log = now
            action = ("serving without it (fail-open)" if self.mode == "open"
                      else "refusing requests with 503 (fail-closed)")
            logger.error("shared state unreachable during the %s: %s; %s",
                         exc.operation, exc, action)
        if self.mode == "closed":
            raise Refusal(
                503,
                "The server cannot reach its shared state store (Redis) to check rate "
                "limits and replays, and refuses requests until it can (fail-closed). "
                f"Retry in {self.RETRY_AFTER} seconds; if this persists, tell the operator.",
                {"Retry-After": str(self.RETRY_AFTER)},
            ) from exc


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """``("10.0.0.1", "192.168.0.0/16")`` -> networks; a bad entry raises ValueError."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError as exc:
            raise ValueError(f"trusted proxy {value!r} is not an IP address or network") from exc
    return tuple(networks)


def client_address(request: Request, trusted_proxies: tuple[Network, ...] = ()) -> str:
    """The client's address: the peer's, or from ``X-Forwarded-For`` when the peer is trusted.

    The header is read right to left, skipping trusted proxies, so a client cannot
    pick its own address by sending a forged ``X-Forwarded-For`` through the proxy.
    """
    return client_address_of_scope(request.scope, trusted_proxies)


def client_address_of_scope(scope: Scope, trusted_proxies: tuple[Network, ...] = ()) -> str:
    """``client_address`` for an ASGI scope (middleware has no ``Request``)."""
    client = scope.get("client")
    peer = str(client[0]) if client else "unknown"
    if not trusted_proxies or not _is_trusted(peer, trusted_proxies):
        return peer
    forwarded = ",".join(Headers(scope=scope).getlist("x-forwarded-for"))
    hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _is_trusted(hop, trusted_proxies):
            return hop
    return peer


def _is_trusted(address: str, trusted: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


class RateLimiter:
    """Requests per window per client address (``limits``' moving window), 429 beyond it.

    ``limit`` is a ``limits`` string (``"60/minute"``, ``"5/second"``); ``None``
    disables the limiter.
    """

    def __init__(
        self,
        limit: str | None,
        state: SharedState,
        policy: FailurePolicy,
        trusted_proxies: tuple[Network, ...] = (),
    ) -> None:
        self.item: RateLimitItem | None = parse(limit) if limit else None
        self._strategy = (
            MovingWindowRateLimiter(state.rate_storage) if state.rate_storage is not None else None
        )
        # In memory, the guard's own moving window: limits' memory storages work with
        # threads, which the event loop waits for (docs/benchmarks.md, "One front door").
        self._memory = MemoryMovingWindow() if self._strategy is None else None
        self._policy = policy
        self.trusted_proxies = trusted_proxies

    async def check(self, request: Request, scope: str = "generate") -> None:
        """Count this request against its client; raise ``Refusal(429)`` over the limit."""
        if self.item is None:
            return
        key = client_address(request, self.trusted_proxies)
        if self._memory is not None:
            if self._memory.hit(self.item, scope, key):
                return
            stats = self._memory.get_window_stats(self.item, scope, key)
            self._reject(stats.reset_time)
        assert self._strategy is not None
        try:
            if await self._strategy.hit(self.item, scope, key):
                return
            stats = await self._strategy.get_window_stats(self.item, scope, key)
        except Exception as exc:
            translated = translate_rate_storage_error(exc)
            if translated is None:
                raise
            self._policy.handle(translated)
            return
        self._reject(stats.reset_time)

    def _reject(self, reset_time: float) -> NoReturn:
        assert self.item is not None
        retry_after = max(1, math.ceil(reset_time - time.time()))
        raise Refusal(
            429,
            f"Too many requests: this server allows {self.item.amount} per "
            f"{_window_text(self.item)} from one client. Retry after {retry_after} seconds.",
            {"Retry-After": str(retry_after)},
        )


class MemoryMovingWindow:
    """``limits``' moving window, in this process's memory, for one event loop.

    Per key, the times of its hits within the window, oldest first: a hit is allowed
    while fewer than ``item.amount`` are younger than the window, as in ``limits``
    (``MovingWindowRateLimiter``), whose ``RateLimitItem`` and keys it takes.

    Keys are kept in the order of their last counted hit, so the idle ones are at the
    front: each hit forgets at most ``FORGET_PER_HIT`` keys whose last hit has left
    their window. Memory stays bounded by the clients seen within a window, and no hit
    ever waits for a pass over every client.
    """

    FORGET_PER_HIT = 4

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._hits: OrderedDict[str, tuple[float, deque[float]]] = OrderedDict()
        self._next_forget = -math.inf  # no key is stale before then

    def hit(self, item: RateLimitItem, *identifiers: str) -> bool:
        """Count a hit and return True, or return False (and count nothing) over the limit."""
        now = self._clock()
        window = item.get_expiry()
        self._forget_idle(now)
        key = item.key_for(*identifiers)
        entry = self._hits.get(key)
        if entry is None:
            entry = self._hits[key] = (window, deque())
        hits = entry[1]
        while hits and hits[0] <= now - window:
            hits.popleft()
        if len(hits) >= item.amount:
            return False
        hits.append(now)
        self._hits.move_to_end(key)
        return True

    def get_window_stats(self, item: RateLimitItem, *identifiers: str) -> WindowStats:
        """When the oldest hit in the window leaves it, and how many hits remain."""
        now = self._clock()
        window = item.get_expiry()
        entry = self._hits.get(item.key_for(*identifiers))
        hits = [t for t in entry[1] if t > now - window] if entry else []
        reset = (hits[0] if hits else now) + window
        return WindowStats(reset, max(0, item.amount - len(hits)))

    def _forget_idle(self, now: float) -> None:
        if now < self._next_forget:
            return
        entries = self._hits
        for _ in range(self.FORGET_PER_HIT):
            if not entries:
                return
            key = next(iter(entries))
            window, hits = entries[key]
            if hits and hits[-1] > now - window:
                # The least recently counted key is still in its window; none is stale
                # before it leaves (keys behind it were counted later).
                self._next_forget = hits[-1] + window
                return
            del entries[key]

    def __len__(self) -> int:
        return len(self._hits)


def _window_text(item: RateLimitItem) -> str:
    unit = item.GRANULARITY.name
    return unit if item.multiples == 1 else f"{item.multiples} {unit}s"


class StreamLimiter:
    """At most ``limit`` answers streaming at once in this process (0: no bound).

    ``try_acquire()`` returns a release callable (idempotent) or raises
    ``Refusal(503)`` when full: an answer's slot outlives the route function.
    """

    def __init__(
        self, limit: int, *, retry_after: int = 1,
        on_change: Callable[[int], None] | None = None,
    ) -> None:
        self.limit = limit
        self.retry_after = retry_after
        self.in_flight = 0
        self._on_change = on_change

    def try_acquire(self) -> Callable[[], None]:
        if self.limit and self.in_flight >= self.limit:
            raise Refusal(
                503,
                f"The server is busy: it is already streaming {self.in_flight} answers, "
                f"as many as it allows at once. Retry after {self.retry_after} seconds.",
                {"Retry-After": str(self.retry_after)},
            )
        self._change(+1)
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._change(-1)

        return release

    def _change(self, delta: int) -> None:
        self.in_flight += delta
        if self._on_change is not None:
            self._on_change(delta)


class RequestGuard:
    """The checks every route passes, in one place (see the module's docstring)."""

    def __init__(
        self,
        *,
        rate_limiter: RateLimiter,
        streams: StreamLimiter,
        max_body_bytes: int,
        max_messages: int = 0,
        max_message_chars: int = 0,
        max_image_bytes: int = 0,
        max_images: int = 0,
        max_parts: int = 0,
        passwords: tuple[str, ...] = (),
        api_keys: tuple[str, ...] = (),
    ) -> None:
        self.rate_limiter = rate_limiter
        self.streams = streams
        self.max_body_bytes = max_body_bytes
        self.max_messages = max_messages
        self.max_message_chars = max_message_chars
        self.max_image_bytes = max_image_bytes
        self.max_images = max_images
        self.max_parts = max_parts
        self.passwords = passwords
        # The gateway takes its API keys and, so that a locked site stays locked on
        # every route, the site passwords as bearer tokens.
        self.bearer_tokens = api_keys + passwords

    async def admit(self, request: Request, route: str, *, bearer: bool = False) -> bytes:
        """Size, rate (``route``'s own budget), bearer token when asked, then the body.

        Returns the body, read in full; raises ``Refusal`` at the first check that fails.
        """
        self.check_declared_size(request)
        await self.rate_limiter.check(request, route)
        if bearer:
            self.check_bearer(request)
        return await self.read_body(request)

    def check_declared_size(self, request: Request) -> None:
        """413 at once when ``Content-Length`` already says the body is too large."""
        declared = request.headers.get("content-length", "")
        if self.max_body_bytes and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise Refusal(413, self._too_large(int(declared)))

    async def read_body(self, request: Request) -> bytes:
        """The body, refused with 413 as soon as it passes ``max_body_bytes``.

        Counted as it arrives, so a chunked body (no ``Content-Length``) is bounded too.
        """
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if self.max_body_bytes and size > self.max_body_bytes:
                    raise Refusal(413, self._too_large(size, at_least=True))
                if chunk:  # Starlette ends with b"": a body in one piece is returned, not copied
                    chunks.append(chunk)
        except ClientDisconnect as exc:
            raise Refusal(400, "The client disconnected before sending the whole body.") from exc
        return b"".join(chunks)

    def check_conversation(self, texts: Sequence[str], where: str = "messages.{index}") -> None:
        """413 for too many messages or a message too long, naming which.

        ``where`` formats a message's position the way the route's clients name it.
        """
        count = len(texts)
        if self.max_messages and count > self.max_messages:
            raise Refusal(
                413,
                f"Too many messages: {count}; this server accepts at most {self.max_messages}. "
                "Drop the oldest turns of the conversation.",
            )
        if self.max_message_chars:
            for index, text in enumerate(texts):
                if len(text) > self.max_message_chars:
                    raise Refusal(
                        413,
                        f"Message too long: {where.format(index=index)} has {len(text)} "
                        f"characters; this server accepts at most {self.max_message_chars} "
                        "per message. Shorten it.",
                    )

    def check_part_count(self, data: Any, field: str) -> None:
        """413 when the messages of a parsed body hold more than ``max_parts`` content parts.

        ``data`` is the body's JSON as parsed, not yet validated: building a model per
        part is what makes half a million empty parts cost seconds, so they are counted
        first. ``field`` is where a message keeps its parts (``"parts"`` on
        ``/api/generate``, ``"content"`` on ``/v1``). Anything malformed is left to the
        validation that follows.
        """
        if not self.max_parts or not isinstance(data, dict):
            return
        messages = data.get("messages")
        if not isinstance(messages, list):
            return
        count = 0
        for message in messages:
            parts = message.get(field) if isinstance(message, dict) else None
            if isinstance(parts, list):
                count += len(parts)
        if count > self.max_parts:
            raise Refusal(
                413,
                f"Too many content parts: {count} in the request's messages; this server "
                f"accepts at most {self.max_parts} per request (--max-parts), history "
                "included. Send each message's text as one part (and one part per image).",
                param="messages",
            )

    def check_image_count(self, count: int, param: str | None = None) -> None:
        """413 when a request holds more than ``max_images`` images (before any is decoded)."""
        if self.max_images and count > self.max_images:
            raise Refusal(
                413,
                f"Too many images: {count}; this server accepts at most {self.max_images} "
                "per request (--max-images). Send fewer images.",
                param=param,
            )

    def check_images(
        self,
        messages: Sequence[Sequence[tuple[int, str, str | Base64Run]]],
        where: str = "messages[{index}].parts[{part}]",
    ) -> list[tuple[Image, ...]]:
        """Each message's images, checked, in order; a ``Refusal`` names the part and the limit.

        ``messages`` holds, per message, its image parts as ``(part number, declared
        type, base64)``, the base64 as text or as a ``Base64Run`` of the body; ``where``
        formats a part's position the way the route's clients name it. Each image's
        bytes must be a raster type (``gprochat.images``), at most ``max_image_bytes``
        long (413); at most ``max_images`` in a request (413).
        """
        self.check_image_count(sum(len(parts) for parts in messages))
        checked: list[tuple[Image, ...]] = []
        for index, parts in enumerate(messages):
            images = []
            for part, declared, data in parts:
                name = where.format(index=index, part=part)
                try:
                    images.append(
                        Image.from_base64(
                            data, declared, where=name, max_bytes=self.max_image_bytes or None
                        )
                    )
                except ImageError as exc:
                    limit = " (--max-image-bytes)" if exc.status == 413 else ""
                    raise Refusal(exc.status, exc.message + limit) from None
            checked.append(tuple(images))
        return checked

    def check_password(self, given: str | None) -> None:
        """401 ``Invalid password.`` when the site has passwords and ``given`` is none of them."""
        if self.passwords and not protocol.password_matches(given, self.passwords):
            raise Refusal(401, protocol.INVALID_PASSWORD)

    def check_bearer(self, request: Request) -> None:
        """401 unless ``Authorization: Bearer`` carries an API key or a site password.

        Open only when the server has neither (``gateway_warning`` says so at start-up).
        """
        if not self.bearer_tokens:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Refusal(
                401,
                "Missing API key: this server is locked. Send 'Authorization: Bearer KEY' with "
                "one of its API keys or the site password (with the OpenAI SDK: api_key=...).",
                {"WWW-Authenticate": "Bearer"},
            )
        if not protocol.password_matches(token, self.bearer_tokens):
            raise Refusal(
                401,
                "Incorrect API key: it is neither one of this server's API keys (--api-key) "
                "nor its site password.",
                {"WWW-Authenticate": "Bearer"},
            )

    def _too_large(self, size: int, at_least: bool = False) -> str:
        return (
            f"Request body too large: {'at least ' if at_least else ''}{size} bytes; this server "
            f"accepts at most {self.max_body_bytes}. Send a shorter conversation, or fewer or "
            "smaller images."
        )
