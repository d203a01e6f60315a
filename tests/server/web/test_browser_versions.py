"""An answer's versions in a real Chromium: Retry adds one, a "2/3" pager pages through them.

The backend numbers its answers, so each retry answers differently."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from gprochat.errors import BackendError
from gprochat.server.backends import Backend, Conversation

from .test_browser import reload, send, sent_bodies, wait_answers
from .test_browser_state import second_tab

DONE = ("() => !document.querySelector('.message.assistant.streaming')"
        " && document.querySelector('.message.assistant .retry')")


class CountingBackend(Backend):
    """Answers ``answer N to <message>``, N counting every answer it gave."""

    name = "counting"

    def __init__(self) -> None:
        self.count = 0

    async def stream(self, conversation: Conversation) -> AsyncIterator[str]:
        self.count += 1
        yield f"answer {self.count} to {conversation.message}"


def position(page: Any) -> str:
    return str(page.locator(".message.assistant .version-position").last.inner_text())


def retry(page: Any) -> None:
    page.click(".message.assistant .retry")
    page.wait_for_function(DONE)


def test_retry_keeps_earlier_answers_as_versions_to_page_through(make_server: Any, page_of: Any) -> None:
    server = make_server(backend=CountingBackend())
    page = page_of(server.base_url)
    send(page, "Q")
    assert wait_answers(page, 1) == ["answer 1 to Q"]
    assert page.locator(".version-pager").count() == 0  # one version: no pager
    retry(page)
    assert wait_answers(page, 1) == ["answer 2 to Q"]
    assert position(page) == "2/2"
    retry(page)
    assert wait_answers(page, 1) == ["answer 3 to Q"]
    assert position(page) == "3/3"
    assert page.get_by_role("button", name="Next version").get_attribute("aria-disabled") == "true"
    # By keyboard: focus stays on the button pressed, the page announces the version.
    page.get_by_role("button", name="Previous version").focus()
    page.keyboard.press("Enter")
    assert (position(page), wait_answers(page, 1)) == ("2/3", ["answer 2 to Q"])
    assert page.evaluate("document.activeElement.getAttribute('aria-label')") == "Previous version"
    page.keyboard.press("Enter")
    assert (position(page), wait_answers(page, 1)) == ("1/3", ["answer 1 to Q"])
    assert page.get_by_role("button", name="Previous version").get_attribute("aria-disabled") == "true"
    page.wait_for_function("() => document.getElementById('announcer').textContent === 'Version 1 of 3'")
    # Stored: another tab and a reload show the same version, with all three.
    tab = second_tab(page, server.base_url)
    assert (position(tab), wait_answers(tab, 1)) == ("1/3", ["answer 1 to Q"])
    page.get_by_role("button", name="Next version").click()
    tab.wait_for_function("() => document.querySelector('.version-position').textContent === '2/3'")
    assert wait_answers(tab, 1) == ["answer 2 to Q"]
    reload(page)
    assert (position(page), wait_answers(page, 1)) == ("2/3", ["answer 2 to Q"])
    # The next message carries the version shown as the model's turn.
    bodies = sent_bodies(page)
    send(page, "Next")
    assert wait_answers(page, 2) == ["answer 2 to Q", "answer 4 to Next"]
    assert [m["parts"][0]["text"] for m in bodies[-1]["messages"]] == ["Q", "answer 2 to Q", "Next"]
    assert page.errors == [] and tab.errors == []


class Scripted(Backend):
    """Answer 1 at once; answer 2 refused before any text; answer 3 slowly, word by word."""

    name = "scripted"

    def __init__(self) -> None:
        self.count = 0

    async def stream(self, conversation: Conversation) -> AsyncIterator[str]:
        self.count += 1
        if self.count == 2:
            raise BackendError("The model is unavailable right now.", status=502)
        if self.count == 1:
            yield "first answer"
            return
        for index in range(200):
            yield f"w{index} "
            await asyncio.sleep(0.05)


def test_a_failed_or_interrupted_retry_loses_no_version(make_server: Any, page_of: Any) -> None:
    server = make_server(backend=Scripted())
    page = page_of(server.base_url)
    send(page, "Q")
    assert wait_answers(page, 1) == ["first answer"]
    # Refused before any text: the answer stays as it was, the card offers Retry.
    page.click(".message.assistant .retry")
    card = page.locator(".error-card")
    card.wait_for()
    assert "unavailable" in card.inner_text()
    assert wait_answers(page, 1) == ["first answer"]
    assert page.locator(".version-pager").count() == 0
    # Retried again and reloaded mid-answer: both versions kept, the new one incomplete.
    card.locator(".retry").click()
    page.wait_for_selector(".message.assistant.streaming .bubble:has-text('w3')")
    reload(page)
    assert position(page) == "2/2"
    assert "Incomplete" in page.locator(".message.assistant .status-note").inner_text()
    assert wait_answers(page, 1)[0].startswith("w0 w1 w2 w3")
    page.get_by_role("button", name="Previous version").click()
    assert wait_answers(page, 1) == ["first answer"]
    assert page.locator(".message.assistant .status-note").count() == 0
    assert page.errors == []
