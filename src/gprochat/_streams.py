"""Helpers for text streams, shared by the client, the server and the gateway.

``finish_step``/``abandon_step`` take an awaitable one step at a time, which is how
"ready at once" is decided (``server.streaming.ChunkStream`` for bytes,
``ready_texts`` for text): take one step of ``__anext__()``; if it ends without
suspending, the item was ready; if it suspends, hand its pending future to the event
loop as ``await`` would (``finish_step``), or unwind it (``abandon_step``).
"""

from __future__ import annotations

import types
from collections.abc import AsyncIterator, Generator
from typing import Any

__all__ = ["MAX_JOINED_CHARS", "abandon_step", "aclose", "finish_step", "first_text", "ready_texts"]

MAX_JOINED_CHARS = 64 * 1024


async def first_text(chunks: AsyncIterator[str]) -> str:
    """The first non-empty chunk, or ``""`` for an empty answer."""
    async for chunk in chunks:
        if chunk:
            return chunk
    return ""


async def aclose(iterator: AsyncIterator[Any]) -> None:
    """Close an async iterator that can be closed (an async generator); others need not."""
    close = getattr(iterator, "aclose", None)
    if close is not None:
        await close()


@types.coroutine
def finish_step(step: Generator[Any, Any, Any], pending: Any) -> Generator[Any, Any, Any]:
    """The rest of an awaitable whose first step yielded ``pending``: what ``await`` does.

    The event loop resumes or cancels it, as it would the awaitable itself.
    """
    while True:
        try:
            sent = yield pending
        except GeneratorExit:
            step.close()
            raise
        except BaseException as exc:
            try:
                pending = step.throw(exc)
            except StopIteration as done:
                return done.value
        else:
            try:
                pending = step.send(sent)
            except StopIteration as done:
                return done.value


async def abandon_step(step: Generator[Any, Any, Any], exc: BaseException) -> None:
    """Deliver ``exc`` into a half-run step and let it finish however it does.

    An async generator waiting in that step unwinds where it waits (its ``finally``
    runs); the caller re-raises ``exc`` itself.
    """
    try:
        pending = step.throw(exc)
        await finish_step(step, pending)
    except BaseException:  # noqa: S110 - ``exc`` itself is re-raised by the caller
        pass


async def ready_texts(
    texts: AsyncIterator[str], first: str = "", *, limit: int = MAX_JOINED_CHARS
) -> AsyncIterator[str]:
    """``first`` and ``texts``, each run of texts ready at the same instant joined into one.

    A joined text is yielded as soon as the next text is not ready at once (or the
    run reaches ``limit`` characters), so no text waits for a later one; joining only
    merges texts the source yields without waiting in between, such as several
    events parsed from one network read. Empty texts are dropped. A failure of
    ``texts`` comes after the text that was ready before it. ``texts`` is closed
    whatever happens.
    """
    run: list[str] = [first] if first else []
    size = len(first)
    held: Generator[Any, Any, Any] | None = None  # a half-run step, across a yield
    try:
        while True:
            step = texts.__anext__().__await__()
            try:
                pending = step.send(None)
            except StopIteration as ready:
                text = ready.value
                if text:
                    run.append(text)
                    size += len(text)
                    if size >= limit:
                        yield "".join(run)
                        run.clear()
                        size = 0
                continue
            # Not ready: what was ready goes out now, then wait for the next text.
            if run:
                held = step
                yield run[0] if len(run) == 1 else "".join(run)
                held = None
                run.clear()
                size = 0
            text = await finish_step(step, pending)
            if text:
                run.append(text)
                size += len(text)
    except StopAsyncIteration:
        pass
    except Exception:
        if run:
            yield "".join(run)
        raise
    except BaseException as exc:
        # Closed or cancelled while ``texts`` waited in a step: unwind it there first.
        if held is not None:
            await abandon_step(held, exc)
        raise
    finally:
        await aclose(texts)
    if run:
        yield run[0] if len(run) == 1 else "".join(run)
