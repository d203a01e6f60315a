"""Nothing lost, nothing mixed up: two tabs, answers in parallel, refused messages,
the password gate. Two tabs are two pages of one browser context (one storage)."""

from __future__ import annotations

import json
from typing import Any

from .test_browser import PREFIX, reload, send, sent_bodies, wait_answers

LONG = " ".join(f"word{i}" for i in range(400))  # 200 chunks: 20 s at --echo-delay 0.1
STREAMING = ".message.assistant.streaming .bubble:has-text('backend')"


def second_tab(page: Any, base_url: str) -> Any:
    """Another page of the same browser context: the same storage, like a second tab."""
    tab = page.context.new_page()
    tab.errors = []
    tab.on("pageerror", lambda error: tab.errors.append(str(error)))
    tab.set_default_timeout(15_000)
    tab.goto(base_url)
    tab.locator("html.ready").wait_for(state="attached")
    return tab


def titles(page: Any) -> list[str]:
    return page.locator("#conversation-list .conversation").all_inner_texts()


def user_texts(page: Any) -> list[str]:
    return page.locator(".message.user .bubble").all_inner_texts()


def wait_titles(page: Any, expected: list[str]) -> None:
    page.wait_for_function(
        "want => JSON.stringify([...document.querySelectorAll('#conversation-list .conversation')]"
        ".map(e => e.textContent.trim()).sort()) === JSON.stringify(want)",
        arg=sorted(expected),
    )


def test_a_stopped_answer_in_one_tab_does_not_erase_another_tabs_conversation(
    web_server: Any, page_of: Any
) -> None:
    server = web_server("--echo-delay", "0.1")
    one = page_of(server.base_url)
    send(one, LONG)
    one.wait_for_selector(STREAMING)
    two = second_tab(one, server.base_url)
    two.click("#new-chat")
    send(two, "Tab two's question")
    assert wait_answers(two, 1) == [f"{PREFIX} Tab two's question"]
    assert one.locator(".message.assistant.streaming").count() == 1
    one.keyboard.press("Escape")
    one.locator(".message.assistant .status-note:text-is('Stopped')").wait_for()
    # Tab two keeps its conversation, tab one learns of it, and so does a fresh tab.
    both = [LONG[:47] + "…", "Tab two's question"]
    wait_titles(one, both)
    two.wait_for_timeout(300)
    assert sorted(titles(two)) == sorted(both)
    assert user_texts(two) == ["Tab two's question"]
    three = second_tab(one, server.base_url)
    assert sorted(titles(three)) == sorted(both)
    three.click("#conversation-list .conversation >> text=Tab two's question")
    assert wait_answers(three, 1) == [f"{PREFIX} Tab two's question"]
    three.click(f"#conversation-list .conversation >> text={LONG[:20]}")
    assert three.locator(".message.assistant .status-note").inner_text() == "Stopped"
    assert one.errors == two.errors == three.errors == []


def test_each_tab_keeps_its_own_open_conversation(web_server: Any, page_of: Any) -> None:
    server = web_server()
    one = page_of(server.base_url)
    send(one, "About apples")
    wait_answers(one, 1)
    two = second_tab(one, server.base_url)
    two.click("#new-chat")
    send(two, "About pears")
    wait_answers(two, 1)
    wait_titles(one, ["About apples", "About pears"])
    assert user_texts(one) == ["About apples"]
    assert one.locator("#chat-title").inner_text() == "About apples"
    assert one.locator("#conversation-list [aria-current=true]").inner_text() == "About apples"
    # Selecting in tab two does not move tab one either.
    two.click("#conversation-list .conversation >> text=About apples")
    two.click("#conversation-list .conversation >> text=About pears")
    one.wait_for_timeout(300)
    assert user_texts(one) == ["About apples"]
    # A message in tab one goes to tab one's conversation, and tab two sees it arrive.
    send(one, "More apples")
    assert wait_answers(one, 2)[1] == f"{PREFIX} More apples"
    two.click("#conversation-list .conversation >> text=About apples")
    assert wait_answers(two, 2)[1] == f"{PREFIX} More apples"
    assert one.errors == two.errors == []


OLD_STORE = {
    "version": 1,
    "current": "b",
    "conversations": [
        {"id": "a", "title": "", "system": "Be brief.", "updated": 1000,
         "messages": [{"role": "user", "content": "Old question"},
                      {"role": "assistant", "content": "Old **answer**"}]},
        {"id": "b", "title": "Renamed", "system": "", "updated": 2000,
         "messages": [{"role": "user", "content": "Cut one"},
                      {"role": "assistant", "content": "Half", "status": "incomplete"}]},
    ],
}


def test_conversations_kept_by_the_old_page_are_all_moved_over(web_server: Any, page_of: Any) -> None:
    server = web_server()
    page = page_of(server.base_url)
    page.evaluate("data => localStorage.setItem('gprochat:conversations:v1', data)", json.dumps(OLD_STORE))
    for _ in range(2):  # the move happens once; the second load reads the new store
        reload(page)
        wait_titles(page, ["Renamed", "Old question"])
        assert page.locator("#chat-title").inner_text() == "Renamed"
        assert "Incomplete" in page.locator(".message.assistant .status-note").inner_text()
        page.click("#conversation-list .conversation >> text=Old question")
        assert user_texts(page) == ["Old question"]
        assert page.locator(".message.assistant .bubble strong").inner_text() == "answer"
        assert "Be brief." in page.locator("#system-banner").inner_text()
        page.click("#conversation-list .conversation >> text=Renamed")
    assert page.errors == []


def test_cancelling_a_delete_leaves_the_answer_streaming(web_server: Any, page_of: Any) -> None:
    server = web_server("--echo-delay", "0.1")
    page = page_of(server.base_url)
    words = " ".join(f"word{i}" for i in range(60))
    send(page, words)
    page.wait_for_selector(STREAMING)
    page.on("dialog", lambda dialog: dialog.dismiss())
    page.click("#more")
    page.click("#delete")
    assert wait_answers(page, 1) == [f"{PREFIX} {words}"]
    assert page.locator(".status-note").count() == 0


def test_a_refused_message_stays_refused_across_reloads_and_is_never_merged(
    web_server: Any, page_of: Any
) -> None:
    # Three answers a minute (the page's own loads count apart: three of them here).
    server = web_server("--rate-limit", "3/minute")
    page = page_of(server.base_url)
    for count, text in enumerate(["one", "two", "three"], start=1):
        send(page, text)
        wait_answers(page, count)
    send(page, "four")
    page.locator(".error-card:has-text('Too many requests')").wait_for()
    reload(page)
    card = page.locator(".error-card")
    card.wait_for()
    assert "Too many requests" in card.inner_text()
    assert card.locator(".retry").count() == 1
    assert "retry in" in card.locator(".countdown").inner_text()
    assert user_texts(page) == ["one", "two", "three", "four"]
    bodies = sent_bodies(page)
    send(page, "five")
    page.locator(".message.user .bubble:text-is('five')").wait_for()
    page.wait_for_function("() => document.querySelectorAll('.error-card').length === 2")
    texts = [part["text"] for m in bodies[-1]["messages"] for part in m["parts"]]
    assert texts[-1] == "five"
    assert not any("four" in text for text in texts)
    reload(page)
    assert user_texts(page) == ["one", "two", "three", "four", "five"]
    assert page.locator(".error-card .retry").count() == 2
    assert page.errors == []


def test_answers_stream_per_conversation(web_server: Any, page_of: Any) -> None:
    server = web_server("--echo-delay", "0.1")
    page = page_of(server.base_url)
    send(page, "About apples")
    wait_answers(page, 1)
    page.click("#new-chat")
    send(page, LONG)  # conversation B answers at length
    page.wait_for_selector(STREAMING)
    page.click("#conversation-list .conversation >> text=About apples")
    # A is idle: Send, its own Retry; the list says B is answering.
    assert page.locator("#send").is_visible() and not page.locator("#stop").is_visible()
    assert page.locator(".message.assistant .retry").count() == 1
    answering = page.locator("#conversation-list .conversation.answering")
    assert answering.count() == 1 and answering.inner_text().startswith("word0")
    # Enter in A sends while B answers; A answers too.
    send(page, "More " + LONG)
    page.wait_for_selector(".message.assistant.streaming .bubble:has-text('More')")
    page.wait_for_function(
        "() => document.querySelectorAll('#conversation-list .conversation.answering').length === 2"
    )
    # Stop in A stops A only.
    page.click("#stop")
    page.locator(".message.assistant .status-note:text-is('Stopped')").wait_for()
    assert page.locator("#conversation-list .conversation.answering").count() == 1
    page.click(f"#conversation-list .conversation >> text={LONG[:20]}")
    assert page.locator("#stop").is_visible()
    assert page.locator(".message.assistant.streaming").count() == 1
    # Clear while answering: stops the answer and clears.
    page.click("#clear")
    page.wait_for_function("() => document.querySelectorAll('.message').length === 0")
    assert page.locator("#send").is_visible()
    assert page.locator("#conversation-list .conversation.answering").count() == 0
    page.wait_for_timeout(500)
    assert page.locator(".message").count() == 0
    reload(page)
    assert page.locator(".message").count() == 0
    assert page.errors == []


def test_the_password_gate_holds_and_checks_once(web_server: Any, page_of: Any) -> None:
    server = web_server("--password", "open sesame")
    page = page_of(server.base_url)
    dialog = page.locator("#password-dialog")
    assert dialog.is_visible()
    page.keyboard.press("Escape")
    page.keyboard.press("Escape")
    page.wait_for_timeout(200)
    assert dialog.is_visible()
    # Whatever closes it (a browser extension, a script), it opens again.
    page.evaluate("document.getElementById('password-dialog').close()")
    page.wait_for_function("() => document.getElementById('password-dialog').open")
    # Asked again while it is open (what sending does): the same gate, one check.
    page.evaluate(
        "async () => { (await import(document.body.dataset.assets + '/js/dialogs.js')).askPassword(); }"
    )
    auths: list[str] = []
    page.on("request", lambda request: auths.append(request.url)
            if request.url.endswith("/api/auth") else None)
    page.fill("#password-input", "open sesame")
    page.press("#password-input", "Enter")
    dialog.wait_for(state="hidden")
    send(page, "Let me in")
    assert wait_answers(page, 1) == [f"{PREFIX} Let me in"]
    assert len(auths) == 1
    assert page.errors == []


OVERLAY = "Before\n\n$\\kern{-20em}\\raisebox{8em}{\\text{FAKE OVERLAY}}$ and $\\rule{3000px}{40px}$"


def test_math_stays_inside_its_answer(web_server: Any, page_of: Any) -> None:
    server = web_server()
    # Narrow (the conversation list is a closed drawer): what is drawn left of the
    # answer lands on the conversation itself, where a person would read it.
    page = page_of(server.base_url, viewport={"width": 700, "height": 700})
    send(page, "A first message, above the answer")
    wait_answers(page, 1)
    send(page, OVERLAY)
    wait_answers(page, 2)
    page.wait_for_function("() => window.katex && !document.querySelector('.math-pending')")
    page.wait_for_function("() => [...document.querySelectorAll('.katex')].length >= 2")
    # Nothing scrolls sideways: not the page, not the conversation.
    assert page.evaluate("document.documentElement.scrollWidth") <= 700
    assert page.evaluate("(() => { const s = document.getElementById('scroller');"
                         " return s.scrollWidth - s.clientWidth; })()") <= 0
    # The raised text lies outside the answer's box, and the box clips what it draws
    # (paint containment; hit-testing in headless Chromium did not tell the two apart).
    bubble = page.locator(".message.assistant .bubble").nth(1)
    assert "paint" in bubble.evaluate("el => getComputedStyle(el).contain")
    assert page.errors == []


def test_finished_blocks_of_a_streaming_answer_are_rendered_once_and_kept(
    web_server: Any, page_of: Any
) -> None:
    server = web_server("--echo-delay", "0.1")
    page = page_of(server.base_url)
    paragraphs = [f"Paragraph {n} " + " ".join(f"w{n}x{i}" for i in range(8)) for n in range(12)]
    send(page, "\n\n".join(paragraphs))
    # Once the second paragraph has begun, the first is finished: mark its element.
    page.wait_for_selector(".message.assistant.streaming .bubble p:has-text('Paragraph 1 ')")
    page.evaluate(
        "() => { const p = [...document.querySelectorAll('.streaming .bubble p')]"
        ".find(e => e.textContent.includes('Paragraph 0')); p.dataset.marked = 'yes'; }"
    )
    # Many frames later (three more paragraphs), it is the same element, not redrawn.
    page.wait_for_selector(".message.assistant.streaming .bubble p:has-text('Paragraph 4 ')")
    assert page.locator(".streaming .bubble p[data-marked=yes]").count() == 1
    # The finished answer is the whole text, rendered as usual.
    answer = wait_answers(page, 1)[0]
    assert answer.startswith(PREFIX) and answer.endswith("w11x7")
    assert page.locator(f"{'.message.assistant .bubble'} p").count() == 12
    assert page.errors == []


def test_a_streaming_answer_is_not_split_inside_code_or_math(web_server: Any, page_of: Any) -> None:
    server = web_server("--echo-delay", "0.1")
    page = page_of(server.base_url)
    text = ("Intro\n\n```python\na = 1\n\n\nb = 2\n```\n\n$$\nx\n\n= 1\n$$\n\n"
            "After the code " + " ".join(f"tail{i}" for i in range(30)))
    send(page, text)
    page.wait_for_selector(".message.assistant.streaming .bubble:has-text('After the code')")
    streaming = page.locator(".message.assistant.streaming .bubble")
    assert streaming.locator("pre").count() == 1
    assert "b = 2" in streaming.locator("pre").inner_text()
    assert wait_answers(page, 1)[0].endswith("tail29")
    assert page.errors == []
