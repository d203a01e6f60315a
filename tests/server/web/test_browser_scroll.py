"""Following the answer: the view stays at the bottom while the person is there, stays
put when they scroll up, follows again once they are back at the bottom; a new message
and a conversation opened go to the bottom. And following reads no layout while an
answer is drawn (each read there made the browser lay the growing answer out at once).

Positions are read from the page (``scrollTop`` and the distance to the bottom) after
the answer has grown by a given height: events, not time.
"""

from __future__ import annotations

from typing import Any

from .test_browser import DISTANCE_FROM_BOTTOM, send, wait_answers

SCROLLER = "document.getElementById('scroller')"
VIEWPORT = {"width": 900, "height": 600}


def code(lines: int, title: str = "Code") -> str:
    """A fenced code block: its answer grows by a line per chunk of the echo."""
    return f"{title}\n\n```\n" + "\n".join(f"line {i}" for i in range(lines)) + "\n```"


def distance(page: Any) -> float:
    return float(page.evaluate(DISTANCE_FROM_BOTTOM))


def scroll_top(page: Any) -> float:
    return float(page.evaluate(f"{SCROLLER}.scrollTop"))


def wait_growth(page: Any, pixels: int = 200) -> None:
    """Wait until the conversation is ``pixels`` taller than now."""
    height = page.evaluate(f"{SCROLLER}.scrollHeight")
    page.wait_for_function(f"h => {SCROLLER}.scrollHeight > h + {pixels}", arg=height)


def wait_still(page: Any) -> None:
    """Wait until the view has stopped moving (the same scrollTop five frames running)."""
    page.evaluate(f"""() => new Promise((done) => {{
      let last = null, same = 0;
      const check = () => {{
        const top = {SCROLLER}.scrollTop;
        same = top === last ? same + 1 : 0;
        last = top;
        if (same >= 5) done(); else requestAnimationFrame(check);
      }};
      requestAnimationFrame(check);
    }})""")


def streaming(page: Any) -> bool:
    return bool(page.locator(".message.assistant.streaming").count())


def test_follows_stops_when_scrolled_up_and_follows_again_back_at_the_bottom(
    web_server: Any, page_of: Any
) -> None:
    server = web_server("--echo-delay", "0.03")
    page = page_of(server.base_url, viewport=VIEWPORT)
    send(page, code(1000))  # 1,000 chunks, a line each: 30 s or more, stopped before
    page.locator(".message.assistant.streaming").wait_for()
    # At the bottom, the view follows the answer as it grows.
    wait_growth(page)
    wait_growth(page)
    assert streaming(page)
    assert distance(page) < 48
    # The person scrolls up: the view stays where they put it as the answer grows.
    page.mouse.move(450, 300)
    page.mouse.wheel(0, -2000)
    page.wait_for_function(f"d => {DISTANCE_FROM_BOTTOM} > d", arg=1000)
    wait_still(page)
    top = scroll_top(page)
    wait_growth(page)
    wait_growth(page)
    assert streaming(page)
    assert scroll_top(page) == top
    assert distance(page) > 1000
    # Back at the bottom, the view follows again.
    page.mouse.wheel(0, 100_000)
    page.wait_for_function(f"() => {DISTANCE_FROM_BOTTOM} < 48")
    wait_growth(page)
    wait_growth(page)
    assert streaming(page)
    assert distance(page) < 48
    # And it is still there when the answer ends (stopped, drawn for the last time).
    page.keyboard.press("Escape")
    page.locator(".message.assistant .status-note.stopped").wait_for()
    wait_still(page)
    assert distance(page) < 48
    assert page.errors == []


def test_following_keeps_the_bottom_in_view_as_the_composer_grows(web_server: Any, page_of: Any) -> None:
    server = web_server("--echo-delay", "0.05")
    page = page_of(server.base_url, viewport=VIEWPORT)
    send(page, code(400))
    page.locator(".message.assistant.streaming").wait_for()
    wait_growth(page)
    assert distance(page) < 48
    # Typing the next question, several lines long, makes the conversation's view shorter.
    view = page.evaluate(f"{SCROLLER}.clientHeight")
    page.fill("#prompt", "\n".join(f"next question, line {i}" for i in range(8)))
    page.wait_for_function(f"h => {SCROLLER}.clientHeight < h - 100", arg=view)
    wait_growth(page)
    assert streaming(page)
    assert distance(page) < 48
    assert page.errors == []


def test_a_new_message_and_an_opened_conversation_go_to_the_bottom(web_server: Any, page_of: Any) -> None:
    server = web_server()
    page = page_of(server.base_url, viewport=VIEWPORT)
    send(page, code(200))
    wait_answers(page, 1)
    # Scrolled to the top, a new message brings the view to the bottom, and it stays
    # there as its answer arrives.
    page.evaluate(f"{SCROLLER}.scrollTop = 0")
    wait_still(page)
    assert distance(page) > 1000
    send(page, code(150))
    wait_answers(page, 2)
    wait_still(page)
    assert distance(page) < 48
    # A second conversation, read from its top; the first one opens at its bottom.
    page.click("#new-chat")
    send(page, code(300, "Second"))
    wait_answers(page, 1)
    page.evaluate(f"{SCROLLER}.scrollTop = 0")
    wait_still(page)
    page.locator("#conversation-list .conversation", has_text="Code").click()
    page.wait_for_function(f"() => {DISTANCE_FROM_BOTTOM} < 48 && {SCROLLER}.scrollTop > 1000")
    assert page.locator("#chat-title").inner_text() == "Code"
    # Scrolled up there, the second one still opens at its bottom too.
    page.evaluate(f"{SCROLLER}.scrollTop = 0")
    wait_still(page)
    page.locator("#conversation-list .conversation", has_text="Second").click()
    page.wait_for_function(f"() => {DISTANCE_FROM_BOTTOM} < 48 && {SCROLLER}.scrollTop > 1000")
    assert page.locator("#chat-title").inner_text() == "Second"
    assert page.errors == []


# Wraps the page's animation frames and the layout-reading properties: a read inside a
# frame's callback (where the answer is drawn) is recorded with its name.
_COUNT_READS_IN_FRAMES = """
(() => {
  const reads = window.__readsInFrames = [];
  window.__frames = 0;
  let inFrame = false;
  const raf = window.requestAnimationFrame.bind(window);
  window.requestAnimationFrame = (callback) => raf((time) => {
    inFrame = true;
    window.__frames += 1;
    try { callback(time); } finally { inFrame = false; }
  });
  const watch = (proto, name) => {
    const { get, set, value } = Object.getOwnPropertyDescriptor(proto, name);
    const note = (what) => { if (inFrame) reads.push(what); };
    const wrapped = {};
    if (get) wrapped.get = function () { note(`get ${name}`); return get.call(this); };
    if (set) wrapped.set = function (v) { note(`set ${name}`); set.call(this, v); };
    if (value) wrapped.value = function (...args) { note(name); return value.apply(this, args); };
    Object.defineProperty(proto, name, { ...wrapped, configurable: true });
  };
  const reading = ["scrollHeight", "scrollTop", "clientHeight", "getBoundingClientRect", "scrollIntoView"];
  for (const name of reading) watch(Element.prototype, name);
  for (const name of ["offsetHeight", "offsetTop"]) watch(HTMLElement.prototype, name);
})();
"""


def test_following_an_answer_reads_no_layout_while_it_is_drawn(web_server: Any, page_of: Any) -> None:
    server = web_server("--echo-delay", "0.02")
    page = page_of(server.base_url, viewport=VIEWPORT)
    page.context.add_init_script(_COUNT_READS_IN_FRAMES)
    page.reload()
    page.locator("html.ready").wait_for(state="attached")
    send(page, code(200))
    wait_answers(page, 1)
    # (polled on a timer: Playwright's default polling runs in animation frames)
    page.wait_for_function(f"() => {DISTANCE_FROM_BOTTOM} < 48", polling=50)
    # The answer was drawn over many frames and followed to its end, with no read of
    # the layout in them.
    assert page.evaluate("window.__frames") >= 5
    assert page.evaluate("window.__readsInFrames") == []
    assert page.errors == []
