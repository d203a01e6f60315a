"""The timestamp window and replay protection for signed requests.

A signature covers ``time``, the message and the (public) secret, so a captured
request could be sent again forever. The window bounds how long a signature is
valid (``window`` seconds either side of the server's clock); within it, each
signature is accepted once. Both run after the signature check, so a forged
request can neither probe the server's clock nor fill the replay store.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from ..errors import SharedStateError
from .guard import FailurePolicy
from .refusals import Refusal
from .stores import ReplayStore, ReplayStoreFull

__all__ = ["REPLAY_STATUS", "SIGNATURE_ALREADY_USED", "ReplayGuard"]

#: 409 Conflict: the request is well-formed and authentic, but its signature was
#: spent. A distinct status from 401 so a client does not blame its secret key.
REPLAY_STATUS = 409
SIGNATURE_ALREADY_USED = (
    "Signature already used: this server accepts each signed request once. "
    "Sign every request afresh with the current time."
)


class ReplayGuard:
    """``check(time_ms, sign)``: 401 outside the window, 409 for a signature seen before.

    ``window`` 0 turns both checks off (there is then no bound on how long a
    signature must be remembered).
    """

    def __init__(
        self,
        window: float,
        store: ReplayStore,
        policy: FailurePolicy,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.window = window
        self.store = store
        self._policy = policy
        self._clock = clock

    @property
    def enabled(self) -> bool:
        return self.window > 0

    async def check(self, time_ms: int, sign: str) -> None:
        if not self.enabled:
            return
        skew = time_ms / 1000 - self._clock()
        if abs(skew) > self.window:
            raise Refusal(401, _clock_message(skew, self.window))
        # A request is valid while the server's clock is within `window` of its time:
        # a span of 2 * window at most. Remember the signature that long.
        try:
            first = await self.store.claim(sign.lower(), 2 * self.window)
        except SharedStateError as exc:
            self._policy.handle(exc)
            return
        except ReplayStoreFull as exc:
            # Forgetting a signature early would let it be replayed: refuse instead.
            retry_after = max(1, math.ceil(exc.retry_after))
            raise Refusal(
                503,
                f"The server is busy: it remembers {exc.max_entries} recent signatures, its "
                f"limit, and cannot check this one. Retry in {retry_after} seconds.",
                {"Retry-After": str(retry_after)},
            ) from exc
        if not first:
            raise Refusal(REPLAY_STATUS, SIGNATURE_ALREADY_USED)


def _clock_message(skew: float, window: float) -> str:
    direction = "ahead of" if skew > 0 else "behind"
    return (
        f"Request timestamp outside the server's window: the client's clock is off by "
        f"{abs(skew):.0f} seconds ({direction} the server's; at most {window:g} allowed). "
        "Correct the client's clock, and send 'time' in milliseconds since the epoch."
    )

