"""Editing a sent message in a real Chromium: the conversation branches from there, and
the earlier branch stays reachable ("1/2" between arrows on the message)."""

from __future__ import annotations

from typing import Any

from .test_browser import reload, send, sent_bodies, wait_answers
from .test_browser_state import second_tab
from .test_browser_versions import CountingBackend


def user_texts(page: Any) -> list[str]:
    return [text.strip() for text in page.locator(".message.user .bubble").all_inner_texts()]


def first_user_position(page: Any) -> str:
    return str(page.locator(".message.user").first.locator(".version-position").inner_text())


def test_editing_a_message_branches_and_keeps_the_old_branch(make_server: Any, page_of: Any) -> None:
    server = make_server(backend=CountingBackend())
    page = page_of(server.base_url)
    bodies = sent_bodies(page)
    send(page, "Q1")
    wait_answers(page, 1)
    send(page, "Q2")
    assert wait_answers(page, 2) == ["answer 1 to Q1", "answer 2 to Q2"]
    # Esc leaves the message as it was; focus returns to its Edit button.
    page.get_by_role("button", name="Edit message").first.click()
    editor = page.get_by_role("textbox", name="Edited message")
    assert editor.evaluate("e => e === document.activeElement")
    assert editor.input_value() == "Q1"
    page.keyboard.press("Escape")
    assert editor.count() == 0 and user_texts(page) == ["Q1", "Q2"]
    assert page.evaluate("document.activeElement.getAttribute('aria-label')") == "Edit message"
    # Saved: sent as the conversation's last message; what followed it is set aside.
    page.keyboard.press("Enter")
    editor.fill("Q1 edited")
    editor.press("Enter")
    page.wait_for_function("() => !document.querySelector('.message.assistant.streaming')"
                           " && document.querySelectorAll('.message.assistant').length === 1")
    assert user_texts(page) == ["Q1 edited"]
    assert wait_answers(page, 1) == ["answer 3 to Q1 edited"]
    assert [m["parts"][0]["text"] for m in bodies[-1]["messages"]] == ["Q1 edited"]
    assert first_user_position(page) == "2/2"
    # The earlier branch, whole, one "Previous version" away; kept across a reload.
    page.locator(".message.user").first.get_by_role("button", name="Previous version").click()
    assert user_texts(page) == ["Q1", "Q2"]
    assert wait_answers(page, 2) == ["answer 1 to Q1", "answer 2 to Q2"]
    assert first_user_position(page) == "1/2"
    reload(page)
    assert user_texts(page) == ["Q1", "Q2"] and first_user_position(page) == "1/2"
    tab = second_tab(page, server.base_url)
    assert user_texts(tab) == ["Q1", "Q2"] and first_user_position(tab) == "1/2"
    page.locator(".message.user").first.get_by_role("button", name="Next version").click()
    assert user_texts(page) == ["Q1 edited"]
    assert wait_answers(page, 1) == ["answer 3 to Q1 edited"]
    # The other tab follows.
    tab.wait_for_function("() => document.querySelectorAll('.message.user').length === 1")
    assert user_texts(tab) == ["Q1 edited"] and first_user_position(tab) == "2/2"
    # The next message follows the branch shown.
    bodies = sent_bodies(page)
    send(page, "Q3")
    assert wait_answers(page, 2) == ["answer 3 to Q1 edited", "answer 4 to Q3"]
    sent = [m["parts"][0]["text"] for m in bodies[-1]["messages"]]
    assert sent == ["Q1 edited", "answer 3 to Q1 edited", "Q3"]
    assert page.errors == [] and tab.errors == []
