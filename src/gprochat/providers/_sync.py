"""Run async generators from synchronous code, with or without a running event loop.

Every synchronous call goes to one long-lived event loop in a daemon thread. That
works from plain scripts and from a thread whose loop is already running (a Jupyter
cell), and lets pooled connections be reused across synchronous calls.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from concurrent.futures import Future
from typing import Optional, TypeVar

from .._streams import aclose

__all__ = ["iterate_in_background", "run_in_background", "run_if_started", "register_shutdown"]

T = TypeVar("T")

_lock = threading.Lock()
_loop: Optional[asyncio.AbstractEventLoop] = None
_shutdown_hooks: list[Callable[[], Awaitable[None]]] = []


def _background_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(
                target=_run_forever, args=(loop,), name="gprochat-sync", daemon=True
            )
            thread.start()
            _loop = loop
            atexit.register(_stop_background_loop)
        return _loop


def _run_forever(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        loop.close()


def _stop_background_loop() -> None:
    global _loop
    loop, _loop = _loop, None
    if loop is None or loop.is_closed():
        return

    async def close_all() -> None:
        for hook in _shutdown_hooks:
            await hook()

    # Exiting: a hook that fails or hangs must not keep the interpreter from ending.
    with contextlib.suppress(Exception):
        asyncio.run_coroutine_threadsafe(close_all(), loop).result(timeout=5)
    loop.call_soon_threadsafe(loop.stop)
    for thread in threading.enumerate():
        if thread.name == "gprochat-sync" and thread is not threading.current_thread():
            thread.join(timeout=5)


def register_shutdown(hook: Callable[[], Awaitable[None]]) -> None:
    """Await ``hook()`` on the background loop when the interpreter exits."""
    _shutdown_hooks.append(hook)


def run_in_background(awaitable: Awaitable[T]) -> T:
    """Run a coroutine on the background loop and wait for its result."""

    async def wrapper() -> T:
        return await awaitable

    return asyncio.run_coroutine_threadsafe(wrapper(), _background_loop()).result()


def run_if_started(awaitable: Awaitable[None]) -> None:
    """Run a coroutine on the background loop if there is one; otherwise just drop it."""
    with _lock:
        loop = _loop
    if loop is None or loop.is_closed():
        close = getattr(awaitable, "close", None)
        if close is not None:
            close()  # never awaited on purpose: nothing to close
        return
    run_in_background(awaitable)


def iterate_in_background(agen: AsyncIterator[T]) -> Generator[T, None, None]:
    """Iterate an async iterator from synchronous code, one item at a time.

    Closing the returned generator (or leaving a ``for`` loop early) closes the
    async generator on its loop, so its connection is released at once.
    """
    loop = _background_loop()
    try:
        while True:
            future: Future[T] = asyncio.run_coroutine_threadsafe(_next(agen), loop)
            try:
                item = future.result()
            except StopAsyncIteration:
                return
            yield item
    finally:
        asyncio.run_coroutine_threadsafe(aclose(agen), loop).result()


async def _next(agen: AsyncIterator[T]) -> T:
    return await agen.__anext__()
