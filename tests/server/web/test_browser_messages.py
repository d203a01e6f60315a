"""What people expect of messages, in a real Chromium: plain titles, list bullets,
Copy on every message, Clear with Undo, a Markdown export with a clean outline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .test_browser import reload, send, wait_answers

pytestmark = pytest.mark.browser


def test_a_title_made_from_markdown_shows_its_text(web_server: Any, page_of: Any) -> None:
    page = page_of(web_server().base_url)
    send(page, "# **Hello** `world`\nmore below")
    wait_answers(page, 1)
    assert page.locator("#chat-title").text_content() == "Hello world"
    assert page.locator(".conversation[aria-current='true']").text_content() == "Hello world"
    assert page.evaluate("() => document.title") == "Hello world · gprochat"
    # A link and emphasis: their words; the message itself is kept as written.
    page.click("#new-chat")
    written = "> see [the _docs_](https://example.com) now"
    send(page, written)
    wait_answers(page, 1)
    assert page.locator("#chat-title").text_content() == "see the docs now"
    assert page.locator(".message.user .bubble").text_content() == written


def test_top_level_bullets_are_discs_nested_ones_circles(web_server: Any, page_of: Any) -> None:
    page = page_of(web_server().base_url)
    send(page, "Lists:\n\n- top\n  - nested\n    - deeper\n\n1. numbered\n   - under a number")
    wait_answers(page, 1)
    styles = page.evaluate(
        "() => [...document.querySelectorAll('.message.assistant .bubble ul')]"
        ".map(ul => getComputedStyle(ul).listStyleType)"
    )
    assert styles == ["disc", "circle", "square", "circle"]


def test_every_message_has_a_copy_button_that_the_keyboard_reaches(web_server: Any, page_of: Any) -> None:
    page = page_of(web_server().base_url)
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    send(page, "Copy *me*\nplease")
    wait_answers(page, 1)
    user_copy = page.locator(".message.user button.copy")
    assert user_copy.get_attribute("aria-label") == "Copy message"
    assert page.locator(".message.assistant .message-actions button", has_text="Copy").count() == 1
    # From the message box, Shift+Tab walks back until the user's Copy; Enter copies.
    page.focus("#prompt")
    for _ in range(20):
        page.keyboard.press("Shift+Tab")
        if page.evaluate("() => document.activeElement.matches('.message.user button.copy')"):
            break
    else:
        pytest.fail("the user's Copy button is not reachable with the keyboard")
    page.keyboard.press("Enter")
    page.wait_for_function(
        "() => document.querySelector('.message.user button.copy').textContent === 'Copied'")
    assert page.evaluate("navigator.clipboard.readText()") == "Copy *me*\nplease"


def test_clear_offers_undo_and_undo_restores_the_conversation_across_a_reload(
    web_server: Any, page_of: Any
) -> None:
    page = page_of(web_server().base_url)
    send(page, "one")
    wait_answers(page, 1)
    send(page, "two")
    wait_answers(page, 2)
    before = page.locator(".message .bubble").all_text_contents()
    page.click("#clear")
    page.wait_for_function("() => document.querySelectorAll('.message').length === 0")
    undo = page.locator(".undo-bar[role=status] button.undo")
    assert "Conversation cleared." in page.locator(".undo-bar").text_content()
    undo.click()
    page.wait_for_function("() => document.querySelectorAll('.message').length === 4")
    assert page.locator(".message .bubble").all_text_contents() == before
    assert page.locator(".undo-bar").count() == 0
    reload(page)
    assert page.locator(".message .bubble").all_text_contents() == before
    # Cleared and not undone: gone after a reload, and the offer with it.
    page.click("#clear")
    page.locator(".undo-bar").wait_for()
    page.wait_for_timeout(200)
    reload(page)
    assert page.locator(".message").count() == 0
    assert page.locator(".undo-bar").count() == 0
    # A message sent after Clear withdraws the offer.
    send(page, "three")
    wait_answers(page, 1)
    page.click("#clear")
    page.locator(".undo-bar").wait_for()
    send(page, "four")
    wait_answers(page, 1)
    assert page.locator(".undo-bar").count() == 0
    assert page.errors == []


def test_the_markdown_export_puts_message_headings_below_the_role_headings(
    web_server: Any, page_of: Any
) -> None:
    page = page_of(web_server().base_url, accept_downloads=True)
    send(page, "Intro\n\n# Big\n\n## Small\n\n```\n# not a heading\n```\n\nSetext\n===\n\n##### five")
    wait_answers(page, 1)
    with page.expect_download() as download:
        page.click("#more")
        page.click("#export-md")
    text = Path(download.value.path()).read_text(encoding="utf-8")
    headings = [line for line in text.splitlines() if line.startswith("#")]
    assert headings == [
        "# Intro",
        "## You", "### Big", "#### Small", "# not a heading", "### Setext", "###### five",
        "## Assistant", "### Big", "#### Small", "# not a heading", "### Setext", "###### five",
    ]
    # The code block is untouched: its "# not a heading" line is inside its fence.
    assert "```\n# not a heading\n```" in text
