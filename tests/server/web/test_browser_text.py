"""Names on the chat page (titles, link texts) in a real Chromium: what they really say.

A bidi override turns ``\\u202Egpj.exe`` into what reads as ``exe.jpg``; zero-width
characters make two different names look alike. The page shows such characters as
visible markers (``⟨U+202E⟩``) and names every link's real target.
"""

from __future__ import annotations

from typing import Any

import pytest

from .test_browser import reload, send, wait_answers
from .test_browser_images import choose, png

pytestmark = pytest.mark.browser

HIDDEN = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u200b\u200c\u200d\u2060\ufeff"


def shown_titles(page: Any) -> list[str]:
    """The open conversation's title as the heading, the tab and the list show it."""
    return [
        page.locator("#chat-title").text_content(),
        page.evaluate("() => document.title"),
        page.locator(".conversation[aria-current='true']").text_content(),
    ]


def test_a_bidi_override_in_a_link_text_is_shown_and_the_target_named(web_server: Any, page_of: Any) -> None:
    page = page_of(web_server().base_url)
    send(page, "Get [\u202egpj.exe](https://example.com/payload.exe) and [pay\u200bpal](https://evil.test/)")
    wait_answers(page, 1)
    links = page.locator(".message.assistant .bubble a")
    texts = links.all_text_contents()
    assert texts == ["⟨U+202E⟩gpj.exe", "pay⟨U+200B⟩pal"]
    assert not any(character in text for text in texts for character in HIDDEN)
    assert [links.nth(i).get_attribute("title") for i in range(2)] == [
        "https://example.com/payload.exe", "https://evil.test/"]
    # A bare URL that linkify found is named too; its text has no marks to show.
    send(page, "see https://example.org/a")
    wait_answers(page, 2)
    assert page.locator(".message.assistant").nth(1).locator("a").get_attribute("title") == "https://example.org/a"


def test_every_hidden_character_in_a_title_is_shown(web_server: Any, page_of: Any) -> None:
    page = page_of(web_server().base_url)
    send(page, "\u202egpj.exe")
    wait_answers(page, 1)
    assert shown_titles(page) == ["⟨U+202E⟩gpj.exe", "⟨U+202E⟩gpj.exe · gprochat", "⟨U+202E⟩gpj.exe"]
    # A title given by hand: every one of them, each shown by its code point.
    page.click("#more")
    page.click("#rename")
    page.fill("#rename-input", "x" + "x".join(HIDDEN) + "x")
    page.press("#rename-input", "Enter")
    expected = "x" + "x".join(f"⟨U+{ord(c):04X}⟩" for c in HIDDEN) + "x"
    page.wait_for_function("t => document.getElementById('chat-title').textContent === t", arg=expected)
    assert shown_titles(page) == [expected, f"{expected} · gprochat", expected]
    reload(page)
    assert shown_titles(page) == [expected, f"{expected} · gprochat", expected]


def test_emoji_joined_by_zero_width_joiners_stay_whole(web_server: Any, page_of: Any) -> None:
    page = page_of(web_server().base_url)
    send(page, "[👩\u200d💻 and 👍🏽\u200d👍](https://example.com/)")
    wait_answers(page, 1)
    assert page.locator(".message.assistant a").text_content() == "👩\u200d💻 and 👍🏽\u200d👍"


def test_a_bidi_override_in_an_image_name_is_shown(web_server: Any, page_of: Any) -> None:
    page = page_of(web_server().base_url)
    choose(page, ("\u202egnp.exe", "image/png", png(4, 4, (0, 90, 0))))
    page.locator(".attachment img").wait_for()
    send(page, "")
    wait_answers(page, 1)
    # An image-only message: its title is the image's name, and the viewer names it.
    assert page.locator("#chat-title").text_content() == "Image: ⟨U+202E⟩gnp.exe"
    page.click(".image-thumb")
    assert page.locator("#image-dialog-title").text_content() == "Image 1: ⟨U+202E⟩gnp.exe"
