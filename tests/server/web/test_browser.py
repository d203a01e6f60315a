"""The chat page in a real headless Chromium, against a real ``gprochat serve``.

The echo backend repeats the user's message, so what a test sends is what the page
must render as the answer: that also makes hostile answers easy to produce.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from gprochat.protocol import DEFAULT_SECRET_KEY, generate_signature
from gprochat.server.backends.echo import EchoBackend

PREFIX = EchoBackend.PREFIX.strip()
ANSWER = ".message.assistant:not(.streaming) .bubble"


def send(page: Any, text: str) -> None:
    page.fill("#prompt", text)
    page.press("#prompt", "Enter")


def reload(page: Any) -> None:
    """Reload, and wait until the page has read its stored conversations and drawn them."""
    page.reload()
    page.locator("html.ready").wait_for(state="attached")


def wait_answers(page: Any, count: int) -> list[str]:
    """The finished answers' texts, once there are ``count`` of them."""
    page.wait_for_function(
        "n => document.querySelectorAll('.message.assistant:not(.streaming)').length >= n", arg=count
    )
    return [text.strip() for text in page.locator(ANSWER).all_inner_texts()]


def sent_bodies(page: Any) -> list[dict[str, Any]]:
    """Record the JSON bodies the page posts to /api/generate (a list filled as it goes)."""
    bodies: list[dict[str, Any]] = []
    page.on("request", lambda request: bodies.append(json.loads(request.post_data))
            if request.url.endswith("/api/generate") else None)
    return bodies


def test_send_shows_the_answer_streaming_then_complete(web_server: Any, page_of: Any) -> None:
    server = web_server("--echo-delay", "0.25")
    page = page_of(server.base_url)
    bodies = sent_bodies(page)
    message = "one two three four five six seven eight nine ten eleven twelve"
    send(page, message)
    streaming = page.locator(".message.assistant.streaming .bubble")
    # Part of the answer on screen while the rest is still coming.
    page.wait_for_function(
        "() => { const el = document.querySelector('.message.assistant.streaming .bubble');"
        " return el && el.textContent.includes('backend') && !el.textContent.includes('twelve'); }"
    )
    assert page.locator("#stop").is_visible()
    assert "twelve" not in streaming.inner_text()
    assert wait_answers(page, 1) == [f"{PREFIX} {message}"]
    assert page.locator("#send").is_visible()
    # Signed in the browser exactly as the protocol says (the server accepted it, too).
    body = bodies[0]
    assert body["messages"] == [{"role": "user", "parts": [{"text": message}]}]
    assert body["sign"] == generate_signature(body["time"], message, DEFAULT_SECRET_KEY)
    assert page.errors == []


def test_the_page_signs_with_the_deployments_key(web_server: Any, page_of: Any) -> None:
    key = 'our-own-key-<"&>'
    server = web_server("--secret-key", key)
    page = page_of(server.base_url)
    send(page, "Hi with our own key")
    assert wait_answers(page, 1) == [f"{PREFIX} Hi with our own key"]
    # The same function the page uses gives the protocol's check value.
    signature = page.evaluate(
        "async () => (await import(document.body.dataset.assets + '/js/api.js'))"
        ".sign(1693631200000, 'Hello, world!', '2BC120D4-BB36-1B60-26DE-DB630472A3D8')"
    )
    assert signature == generate_signature(1693631200000, "Hello, world!")
    assert signature.startswith("1973b490")


DISTANCE_FROM_BOTTOM = "(() => { const s = document.getElementById('scroller');" \
    " return s.scrollHeight - s.scrollTop - s.clientHeight; })()"


def test_stays_at_the_bottom_while_streaming_unless_scrolled_up(web_server: Any, page_of: Any) -> None:
    server = web_server("--echo-delay", "0.15")
    page = page_of(server.base_url, viewport={"width": 900, "height": 600})
    send(page, "\n".join(f"line {i}" for i in range(80)))
    # Once the answer is taller than the view, the view follows it.
    page.wait_for_function(
        "() => { const s = document.getElementById('scroller');"
        " return document.querySelector('.streaming') && s.scrollHeight > s.clientHeight + 300; }"
    )
    page.wait_for_timeout(400)
    assert page.locator(".streaming").count() == 1
    assert page.evaluate(DISTANCE_FROM_BOTTOM) < 48
    # The person scrolls up to read: the view stays there as text arrives and at the end.
    page.mouse.move(450, 300)
    page.mouse.wheel(0, -200)
    page.wait_for_timeout(200)
    page.evaluate("document.getElementById('scroller').scrollTop = 0")
    height = page.evaluate("document.getElementById('scroller').scrollHeight")
    page.wait_for_function("h => document.getElementById('scroller').scrollHeight > h + 100", arg=height)
    assert page.evaluate("document.getElementById('scroller').scrollTop") == 0
    wait_answers(page, 1)
    assert page.evaluate("document.getElementById('scroller').scrollTop") == 0


def test_reload_keeps_the_conversation(web_server: Any, page_of: Any) -> None:
    server = web_server()
    page = page_of(server.base_url)
    send(page, "Remember **me**")
    assert wait_answers(page, 1) == [f"{PREFIX} Remember me"]
    reload(page)
    assert wait_answers(page, 1) == [f"{PREFIX} Remember me"]
    assert page.locator(".message.user .bubble").inner_text() == "Remember **me**"
    assert page.locator("#chat-title").inner_text() == "Remember me"  # the title without Markdown
    # Clear starts over, and that survives a reload too.
    page.click("#clear")
    reload(page)
    assert page.locator(".message").count() == 0
    assert page.locator("#empty").is_visible()


def test_reload_mid_answer_keeps_what_arrived_marked_incomplete(web_server: Any, page_of: Any) -> None:
    server = web_server("--echo-delay", "0.3")
    page = page_of(server.base_url)
    message = " ".join(f"word{i}" for i in range(40))
    send(page, message)
    page.wait_for_selector(".message.assistant.streaming .bubble:has-text('backend')")
    reload(page)
    answer = page.locator(".message.assistant")
    assert answer.count() == 1
    kept = answer.locator(".bubble").inner_text()
    assert kept and f"{EchoBackend.PREFIX}{message}".startswith(kept) and "word39" not in kept
    assert "Incomplete" in answer.locator(".status-note").inner_text()
    assert page.locator(".message.assistant .retry").is_visible()


def test_stop_ends_the_stream_and_the_server_sees_the_client_leave(web_server: Any, page_of: Any) -> None:
    delay = 0.3
    server = web_server("--echo-delay", str(delay))
    page = page_of(server.base_url)
    words = [f"word{i}" for i in range(60)]
    full_answer = f"{EchoBackend.PREFIX}{' '.join(words)}"
    send(page, " ".join(words))
    page.wait_for_selector(".message.assistant.streaming .bubble:has-text('backend')")
    started = time.monotonic()
    page.click("#stop")
    answer = page.locator(".message.assistant").last
    assert answer.locator(".status-note").inner_text() == "Stopped"
    kept = answer.locator(".bubble").inner_text()
    assert kept and full_answer.startswith(kept.strip()) and "word59" not in kept
    # The server's access log: the answer ended long before the whole of it (about
    # 34 chunks * 0.3 s = 10 s) was sent, with fewer bytes than the whole answer.
    deadline = time.monotonic() + 8
    while not server.access_log("/api/generate") and time.monotonic() < deadline:
        time.sleep(0.1)
    [entry] = server.access_log("/api/generate")
    # The client left mid-answer: logged as such (nginx's 499), never as complete.
    assert (entry["status"], entry["outcome"]) == (499, "client_gone")
    assert entry["bytes"] < len(full_answer.encode())
    assert time.monotonic() - started < 8
    assert server.metric("gprochat_streams_in_flight") == 0
    # Retry answers again, in full this time.
    page.click(".message.assistant .retry")
    assert page.locator(".message.assistant").count() == 1
    page.wait_for_selector(".message.assistant:not(.streaming) .bubble:has-text('word59')", timeout=30_000)


def test_escape_stops_the_answer_too(web_server: Any, page_of: Any) -> None:
    server = web_server("--echo-delay", "0.3")
    page = page_of(server.base_url)
    send(page, " ".join(f"word{i}" for i in range(40)))
    page.wait_for_selector(".message.assistant.streaming .bubble:has-text('backend')")
    page.keyboard.press("Escape")
    assert page.locator(".message.assistant .status-note").inner_text() == "Stopped"
    assert page.locator("#send").is_visible()


def test_password_gate_explains_a_wrong_password_then_remembers_the_right_one(
    web_server: Any, page_of: Any
) -> None:
    server = web_server("--password", "open sesame")
    page = page_of(server.base_url)
    dialog = page.locator("#password-dialog")
    assert dialog.is_visible()
    page.fill("#password-input", "wrong")
    page.press("#password-input", "Enter")
    page.locator("#password-error:has-text('Wrong password')").wait_for()
    assert dialog.is_visible()
    page.fill("#password-input", "open sesame")
    page.press("#password-input", "Enter")
    dialog.wait_for(state="hidden")
    send(page, "Behind the gate")
    assert wait_answers(page, 1) == [f"{PREFIX} Behind the gate"]
    reload(page)
    assert not page.locator("#password-dialog").is_visible()
    # A password that stops working (the operator changed it) is asked for again.
    page.evaluate("localStorage.setItem('gprochat:pass', 'stale')")
    send(page, "Again")
    dialog.wait_for(state="visible")
    assert "Invalid password" in page.locator("#password-error").inner_text()


HOSTILE = [
    '<img src=x onerror="window.__pwned=1">',
    "<script>window.__pwned=1</script>",
    "[click me](javascript:window.__pwned=1)",
    '<a href="javascript:window.__pwned=1">raw link</a>',
    "[x](vbscript:window.__pwned=1) ![y](javascript:window.__pwned=1)",
]


def test_a_hostile_answer_executes_nothing(web_server: Any, page_of: Any) -> None:
    server = web_server()
    page = page_of(server.base_url)
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    for index, text in enumerate(HOSTILE, start=1):
        send(page, text)
        wait_answers(page, index)
    answers = page.locator(".message.assistant .bubble")
    for link in answers.locator("a").all():
        link.click()  # a javascript: URL here would run on click
    page.wait_for_timeout(300)
    assert page.evaluate("window.__pwned") is None
    assert dialogs == []
    html = page.eval_on_selector_all(
        ".message.assistant .bubble", "els => els.map(e => e.innerHTML).join('')"
    )
    assert "<script" not in html
    assert page.locator(".message.assistant .bubble [onerror]").count() == 0
    assert page.locator(".message.assistant .bubble img").count() == 0
    assert page.locator(".message.assistant .bubble script").count() == 0
    assert "javascript:" not in "".join(
        link.get_attribute("href") or "" for link in answers.locator("a").all()
    )
    # The raw HTML is shown as text, as the model wrote it.
    assert '<img src=x onerror="window.__pwned=1">' in answers.nth(0).inner_text()
    # Past the renderers: the page refuses HTML strings that DOMPurify did not make
    # (Trusted Types), and an inline handler set some other way does not run (CSP).
    refused = page.evaluate(
        """() => {
          try {
            document.body.insertAdjacentHTML('beforeend', '<img src=x onerror="window.__pwned=2">');
            return null;
          } catch (error) { return error.message; }
        }"""
    )
    assert refused and "TrustedHTML" in refused
    page.evaluate(
        """() => {
          const img = document.createElement('img');
          try { img.setAttribute('onerror', 'window.__pwned=3'); } catch (_) {}
          img.src = 'x';
          document.body.append(img);
        }"""
    )
    page.wait_for_timeout(300)
    assert page.evaluate("window.__pwned") is None
    assert page.errors == []


MARKDOWN = """Intro

- one
- two

| a | b |
|---|---|
| 1 | 2 |

```python
print("hi")
```

Inline $e^{i\\pi}+1=0$ and display:

$$\\frac{1}{2}$$
"""


def test_markdown_code_and_math_are_rendered(web_server: Any, page_of: Any) -> None:
    server = web_server()
    page = page_of(server.base_url)
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    send(page, MARKDOWN)
    wait_answers(page, 1)
    # highlight.js and KaTeX arrive (in idle time, or on first need) and fill the answer in.
    page.wait_for_function("() => window.hljs && window.katex")
    answer = page.locator(".message.assistant .bubble")
    answer.locator(".katex-display").wait_for()
    assert answer.locator("li").all_inner_texts() == ["one", "two"]
    assert answer.locator("table td").all_inner_texts() == ["1", "2"]
    assert answer.locator(".code-head span").inner_text() == "python"
    assert answer.locator("code .hljs-string").inner_text() == '"hi"'
    assert answer.locator(".katex").count() == 2
    answer.locator(".copy-btn").click()
    answer.locator(".copy-btn:text-is('Copied')").wait_for()
    assert page.evaluate("navigator.clipboard.readText()") == 'print("hi")\n'


def test_links_in_answers_open_safely(web_server: Any, page_of: Any) -> None:
    server = web_server()
    page = page_of(server.base_url)
    send(page, "See [the docs](https://example.org/docs) or https://example.net")
    wait_answers(page, 1)
    links = page.locator(".message.assistant .bubble a").all()
    assert [link.get_attribute("href") for link in links] == ["https://example.org/docs", "https://example.net"]
    for link in links:
        assert "noopener" in (link.get_attribute("rel") or "")
        assert link.get_attribute("target") == "_blank"


def test_429_shows_a_countdown_from_retry_after(web_server: Any, page_of: Any) -> None:
    server = web_server("--rate-limit", "2/minute")
    page = page_of(server.base_url)
    send(page, "first")
    wait_answers(page, 1)
    send(page, "second")
    wait_answers(page, 2)
    send(page, "third")
    card = page.locator(".error-card")
    card.wait_for()
    assert "Too many requests" in card.inner_text()
    countdown = card.locator(".countdown")
    first = int(countdown.inner_text().split("in ")[1].split(" s")[0])
    assert 1 <= first <= 60
    assert card.locator(".retry").is_disabled()
    page.wait_for_function(
        "n => { const m = document.querySelector('.countdown').textContent.match(/in (\\d+) s/);"
        " return m && Number(m[1]) < n; }",
        arg=first,
        timeout=10_000,
    )


def test_two_conversations_stay_separate(web_server: Any, page_of: Any) -> None:
    server = web_server()
    page = page_of(server.base_url)
    bodies = sent_bodies(page)
    send(page, "About apples")
    wait_answers(page, 1)
    page.click("#new-chat")
    assert page.locator(".message").count() == 0
    send(page, "About pears")
    assert wait_answers(page, 1) == [f"{PREFIX} About pears"]
    # The second conversation's request carried none of the first one's turns.
    assert [m["parts"][0]["text"] for m in bodies[1]["messages"]] == ["About pears"]
    titles = page.locator("#conversation-list .conversation").all_inner_texts()
    assert titles == ["About pears", "About apples"]
    page.click("#conversation-list .conversation >> text=About apples")
    assert page.locator(".message.user .bubble").all_inner_texts() == ["About apples"]
    send(page, "More apples")
    assert wait_answers(page, 2)[1] == f"{PREFIX} More apples"
    assert [m["parts"][0]["text"] for m in bodies[2]["messages"]] == [
        "About apples", f"{EchoBackend.PREFIX}About apples", "More apples",
    ]
    reload(page)
    assert page.locator(".message.user .bubble").all_inner_texts() == ["About apples", "More apples"]
    page.click("#conversation-list .conversation >> text=About pears")
    assert page.locator(".message.user .bubble").all_inner_texts() == ["About pears"]


def test_system_role_goes_with_the_conversation(web_server: Any, page_of: Any) -> None:
    server = web_server()
    page = page_of(server.base_url)
    bodies = sent_bodies(page)
    page.click("#system-role")
    page.fill("#system-input", "Answer like a pirate.")
    page.click("#system-dialog button[value=ok]")
    page.locator("#system-banner:has-text('Answer like a pirate.')").wait_for()
    send(page, "Hello")
    wait_answers(page, 1)
    roles = [(m["role"], m["parts"][0]["text"]) for m in bodies[0]["messages"]]
    assert roles[0][0] == "user" and "Answer like a pirate." in roles[0][1]
    assert roles[1][0] == "model"
    assert roles[-1] == ("user", "Hello")


def test_keyboard_only_send(web_server: Any, page_of: Any) -> None:
    server = web_server()
    page = page_of(server.base_url)
    assert page.evaluate("document.activeElement.id") == "prompt"  # ready to type on arrival
    # From the top of the page, Tab reaches the skip link first.
    page.evaluate("document.body.tabIndex = -1; document.body.focus()")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip-link"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "prompt"
    page.keyboard.type("first line")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("second line")
    assert page.locator(".message").count() == 0  # Shift+Enter is a new line, not a send
    # An IME confirming a word with Enter must not send either.
    page.evaluate(
        "document.getElementById('prompt').dispatchEvent(new KeyboardEvent('keydown',"
        " {key: 'Enter', isComposing: true, bubbles: true, cancelable: true}))"
    )
    assert page.locator(".message").count() == 0
    page.keyboard.press("Enter")
    assert wait_answers(page, 1) == [f"{PREFIX} first line\nsecond line"]
    # Focus is visible when moving by keyboard.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "send"
    assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") == "solid"
    assert page.locator("#prompt").input_value() == ""


def test_theme_toggle_is_remembered(web_server: Any, page_of: Any) -> None:
    server = web_server()
    page = page_of(server.base_url, color_scheme="light")
    assert page.evaluate("document.documentElement.dataset.theme") is None
    page.click("#theme")
    assert page.evaluate("document.documentElement.dataset.theme") == "dark"
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    reload(page)
    assert page.evaluate("document.documentElement.dataset.theme") == "dark"
    assert background != "rgb(255, 255, 255)"
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == background


def test_export_as_markdown_and_json(web_server: Any, page_of: Any) -> None:
    server = web_server()
    page = page_of(server.base_url, accept_downloads=True)
    send(page, "Export me")
    wait_answers(page, 1)
    with page.expect_download() as markdown_download:
        page.click("#more")
        page.click("#export-md")
    text = Path(markdown_download.value.path()).read_text(encoding="utf-8")
    assert text.startswith("# Export me") and f"{EchoBackend.PREFIX}Export me" in text
    with page.expect_download() as json_download:
        page.click("#more")
        page.click("#export-json")
    data = json.loads(Path(json_download.value.path()).read_text(encoding="utf-8"))
    assert data["messages"] == [
        {"role": "user", "content": "Export me"},
        {"role": "assistant", "content": f"{EchoBackend.PREFIX}Export me"},
    ]


def test_rename_and_delete_a_conversation(web_server: Any, page_of: Any) -> None:
    server = web_server()
    page = page_of(server.base_url)
    send(page, "Keep me")
    wait_answers(page, 1)
    page.click("#new-chat")
    send(page, "Delete me")
    wait_answers(page, 1)
    page.click("#more")
    page.click("#rename")
    page.fill("#rename-input", "Doomed")
    page.press("#rename-input", "Enter")
    page.locator("#chat-title:text-is('Doomed')").wait_for()
    reload(page)
    assert page.locator("#conversation-list .conversation").all_inner_texts() == ["Doomed", "Keep me"]
    page.on("dialog", lambda dialog: dialog.accept())
    page.click("#more")
    page.click("#delete")
    page.wait_for_function("() => document.querySelectorAll('#conversation-list .conversation').length == 1")
    assert page.locator("#conversation-list .conversation").all_inner_texts() == ["Keep me"]
    assert page.locator(".message.user .bubble").all_inner_texts() == ["Keep me"]
    reload(page)
    assert page.locator("#conversation-list .conversation").all_inner_texts() == ["Keep me"]


@pytest.mark.parametrize("width", [375])
def test_usable_on_a_phone(web_server: Any, page_of: Any, width: int) -> None:
    server = web_server()
    page = page_of(server.base_url, viewport={"width": width, "height": 740}, is_mobile=True, has_touch=True)
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    assert not page.locator("#sidebar").is_visible()
    send(page, "From a phone")
    assert wait_answers(page, 1) == [f"{PREFIX} From a phone"]
    page.click("#toggle-sidebar")
    page.locator("#sidebar").wait_for(state="visible")
    assert page.locator("#conversation-list .conversation").all_inner_texts() == ["From a phone"]
    assert page.evaluate("document.documentElement.scrollWidth") <= width
