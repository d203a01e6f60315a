"""Server settings: one object, filled from CLI flags or environment variables."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from ..protocol import DEFAULT_SECRET_KEY

__all__ = ["CONFIG_ENV_VAR", "ServerConfig"]

#: The environment variable that carries a serialized ``ServerConfig`` to worker
#: processes started by ``gprochat serve --workers N``.
CONFIG_ENV_VAR = "GPROCHAT_SERVER_CONFIG_JSON"


@dataclass
class ServerConfig:
    """Everything ``create_app`` needs to know.

    Protocol: ``passwords`` empty means no site password; ``system_prompt`` is put
    before every conversation; ``backend`` names the model backend and
    ``backend_options`` are passed to its constructor.

    Guard (see ``guard.py``): ``timestamp_window`` seconds either side of the server's
    clock (0 turns the window and replay protection off); ``max_body_bytes``,
    ``max_messages`` and ``max_message_chars`` bound a request; ``rate_limit`` is a
    ``limits`` string such as ``"60/minute"`` per client address (``None`` turns it
    off); ``trusted_proxies`` are addresses or networks whose ``X-Forwarded-For`` is
    believed; ``max_streams`` bounds concurrent answers in this process (0: no bound).

    Scale-out: ``redis_url`` moves replay and rate-limit state to Redis;
    ``redis_failure`` says what to do when it is unreachable (``"closed"``: refuse
    with 503, ``"open"``: serve without those checks).

    Operations: ``shutdown_timeout`` is how long in-flight streams may run on after
    a shutdown request before they are cut (``None``: wait for them).
    """

    secret_key: str = DEFAULT_SECRET_KEY
    passwords: tuple[str, ...] = ()
    check_signature: bool = True
    backend: str = "echo"
    backend_options: dict[str, Any] = field(default_factory=dict)
    system_prompt: str | None = None

    # The OpenAI-compatible gateway (/v1): on by default. ``api_keys`` empty means open;
    # ``relay_url`` set means answers come from that GeminiProChat deployment instead
    # of ``backend``, signed with ``relay_secret_key`` and ``relay_password``.
    gateway: bool = True
    # The chat page at / (server/web/): on by default.
    web: bool = True
    api_keys: tuple[str, ...] = ()
    relay_url: str | None = None
    relay_secret_key: str | None = None
    relay_password: str | None = None

    timestamp_window: float = 300.0
    max_body_bytes: int = 1_048_576
    max_messages: int = 200
    max_message_chars: int = 100_000
    rate_limit: str | None = "60/minute"
    trusted_proxies: tuple[str, ...] = ()
    max_streams: int = 64
    busy_retry_after: int = 1

    redis_url: str | None = None
    redis_failure: Literal["open", "closed"] = "closed"

    shutdown_timeout: float | None = 10.0

    def __post_init__(self) -> None:
        if self.redis_failure not in ("open", "closed"):
            raise ValueError(f"redis_failure must be 'open' or 'closed', not {self.redis_failure!r}")
        for name in ("timestamp_window", "max_body_bytes", "max_messages", "max_message_chars",
                     "max_streams"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        # Lists arrive from JSON or callers as lists; the dataclass promises tuples.
        self.passwords = tuple(self.passwords)
        self.trusted_proxies = tuple(self.trusted_proxies)
        self.api_keys = tuple(self.api_keys)

    @staticmethod
    def split_passwords(value: str | None) -> tuple[str, ...]:
        """``"a, b"`` -> ``("a", "b")``: the comma-separated list GeminiProChat accepts."""
        if not value:
            return ()
        return tuple(part.strip() for part in value.split(",") if part.strip())

    def to_json(self) -> str:
        """Serialize, for worker processes (``from_json`` reads it back)."""
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServerConfig:
        data = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})
