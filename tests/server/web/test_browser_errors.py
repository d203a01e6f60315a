"""What the page says when things go wrong (a cut answer, a busy server, no server),
and the page in less usual places (behind a proxy's path prefix)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from gprochat.server import BackgroundServer, ServerConfig, create_app
from gprochat.server.backends import Backend, Conversation
from gprochat.server.backends.echo import EchoBackend

from ...conftest import ServerFactory
from .test_browser import PREFIX, reload, send, wait_answers


class CutOnce(Backend):
    """Fails mid-answer the first time, answers in full afterwards."""

    name = "cut-once"

    def __init__(self) -> None:
        self.calls = 0

    async def stream(self, conversation: Conversation) -> AsyncIterator[str]:
        self.calls += 1
        yield "The first half, "
        await asyncio.sleep(0.05)
        if self.calls == 1:
            raise RuntimeError("the model fell over")
        yield "and the second half."


def test_an_answer_cut_mid_stream_is_marked_incomplete_and_can_be_retried(
    make_server: ServerFactory, page_of: Any
) -> None:
    server = make_server(backend=CutOnce())
    page = page_of(server.base_url)
    send(page, "Tell me everything")
    card = page.locator(".error-card")
    card.wait_for()
    assert "cut off" in card.inner_text()
    answer = page.locator(".message.assistant")
    assert answer.locator(".bubble").inner_text().strip() == "The first half,"
    assert "Incomplete" in answer.locator(".status-note").inner_text()
    # The cut answer is kept across a reload, still marked.
    reload(page)
    assert "Incomplete" in page.locator(".message.assistant .status-note").inner_text()
    page.click(".message.assistant .retry")
    assert wait_answers(page, 1) == ["The first half, and the second half."]
    assert page.locator(".status-note").count() == 0
    assert page.locator(".error-card").count() == 0


def test_a_busy_server_says_so_with_a_countdown(make_server: ServerFactory, page_of: Any) -> None:
    server = make_server(max_streams=1, backend=EchoBackend(delay=0.5))
    first = page_of(server.base_url)
    send(first, " ".join(["slowly"] * 40))
    first.wait_for_selector(".message.assistant.streaming")
    second = page_of(server.base_url)
    send(second, "Me too")
    card = second.locator(".error-card")
    card.wait_for()
    assert "The server is busy" in card.inner_text()
    assert "retry" in card.locator(".countdown").inner_text().lower()
    first.click("#stop")
    # Once the slot is free, Retry gets the answer.
    second.locator(".error-card .retry:not([disabled])").click()
    assert wait_answers(second, 1) == [f"{PREFIX} Me too"]


def test_an_unreachable_server_is_explained(make_server: ServerFactory, page_of: Any) -> None:
    server = make_server()
    page = page_of(server.base_url)
    server.stop()
    send(page, "Anyone there?")
    card = page.locator(".error-card")
    card.wait_for()
    assert "Cannot reach the server" in card.inner_text()
    assert page.locator(".message.user .bubble").inner_text() == "Anyone there?"


def test_the_finished_answer_is_announced_politely(make_server: ServerFactory, page_of: Any) -> None:
    server = make_server()
    page = page_of(server.base_url)
    announcer = page.locator("#announcer")
    assert announcer.get_attribute("aria-live") == "polite"
    assert announcer.get_attribute("role") == "status"
    send(page, "Say it out loud")
    wait_answers(page, 1)
    page.wait_for_function(
        "() => document.getElementById('announcer').textContent.includes('Say it out loud')"
    )
    # Every control has an accessible name.
    unnamed = page.evaluate(
        "() => [...document.querySelectorAll('button, textarea, input')].filter(el =>"
        " !(el.getAttribute('aria-label') || el.textContent.trim() || el.labels?.length))"
        ".map(el => el.outerHTML)"
    )
    assert unnamed == []


class UnderPrefix:
    """What a reverse proxy serving the site at ``/chat/`` does: strip the prefix."""

    def __init__(self, app: ASGIApp, prefix: str) -> None:
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if not scope["path"].startswith(self.prefix + "/"):
                await send({"type": "http.response.start", "status": 404, "headers": []})
                await send({"type": "http.response.body", "body": b"outside the prefix"})
                return
            scope = {**scope, "path": scope["path"][len(self.prefix):], "raw_path": None}
        await self.app(scope, receive, send)


def test_the_page_works_under_a_path_prefix(page_of: Any) -> None:
    app = create_app(ServerConfig())
    with BackgroundServer(app=UnderPrefix(app, "/chat")) as server:
        page = page_of(server.base_url + "/chat/")
        send(page, "Through the proxy, with `code`:\n\n```python\nprint(1)\n```")
        wait_answers(page, 1)
        page.wait_for_function("() => window.hljs")  # loaded lazily, under the prefix too
        assert page.locator(".message.assistant .code-block").count() == 1
        assert page.errors == []
