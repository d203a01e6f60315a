"""Pooled aiohttp sessions: one per (event loop, proxy), closed with their loop.

A ``ClientSession`` belongs to the loop it was made on, so the pool is keyed by
loop and never hands a session to another one. Closing is the hard part: nobody
calls us when ``asyncio.run`` ends. But ``asyncio.run`` (and pytest-asyncio, and
any ``asyncio.Runner``) calls ``loop.shutdown_asyncgens()`` before closing the
loop, which closes every async generator still suspended on it. So each loop's
sessions are guarded by a small "keeper" async generator, parked at its ``yield``;
its ``finally`` closes the sessions while the loop can still run the close.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import AsyncGenerator
from typing import Optional

import aiohttp

from ._proxy import Proxy

__all__ = ["SessionPool", "pool"]


class _LoopSessions:
    """The sessions of one event loop, and the keeper that closes them."""

    def __init__(self) -> None:
        self.sessions: dict[Optional[str], aiohttp.ClientSession] = {}
        self._keeper: Optional[AsyncGenerator[None, None]] = None

    @property
    def started(self) -> bool:
        """Whether the keeper is parked (so the sessions will be closed with the loop)."""
        return self._keeper is not None

    async def start_keeper(self) -> None:
        if self._keeper is None:
            keeper = self._keep()
            self._keeper = keeper
            # The first step registers the generator with the loop's asyncgen hooks.
            await keeper.__anext__()

    async def _keep(self) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            await self._close_sessions()

    async def aclose(self) -> None:
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            await keeper.aclose()
        await self._close_sessions()

    async def _close_sessions(self) -> None:
        sessions = list(self.sessions.values())
        self.sessions.clear()
        for session in sessions:
            await session.close()


class SessionPool:
    """Sessions by (running loop, proxy); ``aclose()`` closes the current loop's."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loops: dict[int, tuple[weakref.ref[asyncio.AbstractEventLoop], _LoopSessions]] = {}
        # The last loop served and its sessions: sequential calls on one loop skip
        # the lock and the dead-loop sweep (one attribute read; safe across threads).
        self._last: Optional[tuple[weakref.ref[asyncio.AbstractEventLoop], _LoopSessions]] = None

    async def session(self, proxy: Optional[Proxy]) -> aiohttp.ClientSession:
        """The pooled session of the running loop for ``proxy`` (made on first use)."""
        loop = asyncio.get_running_loop()
        last = self._last
        if last is not None and last[0]() is loop and last[1].started:
            entry = last[1]
        else:
            found = self._entry(loop, create=True)
            assert found is not None
            entry = found
            await entry.start_keeper()
            self._last = (weakref.ref(loop), entry)
        key = proxy.url if proxy else None
        session = entry.sessions.get(key)
        if session is None or session.closed:
            connector = proxy.connector() if proxy else aiohttp.TCPConnector()
            session = aiohttp.ClientSession(connector=connector)
            entry.sessions[key] = session
        return session

    async def aclose(self) -> None:
        """Close the running loop's sessions (the pool makes new ones if asked again)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            item = self._loops.pop(id(loop), None)
            self._last = None
        if item is not None and item[0]() is loop:
            await item[1].aclose()

    def open_sessions(self) -> int:
        """How many sessions the running loop holds (for tests and diagnostics)."""
        entry = self._entry(asyncio.get_running_loop(), create=False)
        return len(entry.sessions) if entry else 0

    def _entry(self, loop: asyncio.AbstractEventLoop, *, create: bool) -> Optional[_LoopSessions]:
        with self._lock:
            self._forget_dead_loops()
            item = self._loops.get(id(loop))
            if item is not None and item[0]() is loop:
                return item[1]
            if not create:
                return None
            entry = _LoopSessions()
            self._loops[id(loop)] = (weakref.ref(loop), entry)
            return entry

    def _forget_dead_loops(self) -> None:
        # A loop closed without shutdown_asyncgens() leaves its sessions behind;
        # they can never be used again, so drop them rather than reuse them.
        for key, (ref, _entry) in list(self._loops.items()):
            loop = ref()
            if loop is None or loop.is_closed():
                del self._loops[key]


pool = SessionPool()
