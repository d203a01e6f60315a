"""What keeps a long streaming answer cheap, seen from the page: an open code block
grows in place (never redrawn), a long one is kept as grown, Stop hides at once,
highlight.js loads in idle time, a finished block is highlighted once, and a
library arriving late fills in what needs it without drawing anything again. (How
cheap is measured by benchmark B9, not here; these tests count events, not time.)"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from .test_browser import send, wait_answers

STREAMING_CODE = ".message.assistant.streaming .bubble pre code"


def test_an_open_code_block_grows_in_place_and_ends_as_its_source(web_server: Any, page_of: Any) -> None:
    server = web_server("--echo-delay", "0.05")
    page = page_of(server.base_url)
    lines = [f"value_{i} = {i}" for i in range(40)]
    send(page, "Code:\n\n```python\n" + "\n".join(lines) + "\n```\n\nAfter the code.")
    page.wait_for_selector(f"{STREAMING_CODE}:has-text('value_5 ')")
    page.evaluate(f"() => {{ document.querySelector({STREAMING_CODE!r}).dataset.marked = 'yes'; }}")
    # value_31's start means value_30's line has arrived whole (a chunk may end inside it).
    page.wait_for_selector(f"{STREAMING_CODE}:has-text('value_31 ')")
    # Many chunks later it is the same element, grown, not drawn again.
    assert page.locator(f"{STREAMING_CODE}[data-marked=yes]").count() == 1
    shown = page.locator(STREAMING_CODE).text_content() or ""
    assert shown.startswith("value_0 = 0\nvalue_1 = 1\n") and "value_30 = 30" in shown
    answer = wait_answers(page, 1)[0]
    assert answer.endswith("After the code.")
    code = page.locator(".message.assistant .bubble pre code").text_content() or ""
    assert code.rstrip("\n").split("\n") == lines
    assert page.errors == []


def test_a_code_block_too_long_to_highlight_is_kept_as_grown(web_server: Any, page_of: Any) -> None:
    server = web_server("--echo-delay", "0.002")
    page = page_of(server.base_url)
    lines = [f"line_{i} = compute({i})  # the {i}th" for i in range(800)]  # ~27 KB
    send(page, "Code:\n\n```\n" + "\n".join(lines) + "\n```\n\nDone.")
    page.wait_for_selector(f"{STREAMING_CODE}:has-text('line_100 ')")
    page.evaluate(f"() => {{ document.querySelector({STREAMING_CODE!r}).dataset.marked = 'yes'; }}")
    assert wait_answers(page, 1)[0].endswith("Done.")
    # The finished answer shows what was grown (the marked element, copied), not a new
    # rendering, and the closing fence is left out of it.
    code = page.locator(".message.assistant .bubble pre code")
    assert code.get_attribute("data-marked") == "yes"
    assert (code.text_content() or "").rstrip("\n").split("\n") == lines
    assert page.locator(".message.assistant .bubble").inner_text().count("```") == 0
    assert page.errors == []


_WATCH_STOP = """() => {
  const stop = document.getElementById('stop');
  // Added after the page's own click handler, so it runs just after it. The click is
  // dispatched from script: no microtask runs between the two (the stopped request's
  // promise chain would hide Stop too), so this sees what the handler itself did.
  stop.addEventListener('click', () => { window.hiddenByClick = stop.hidden; });
}"""


def test_stop_in_a_code_block_hides_at_once_and_keeps_what_arrived(web_server: Any, page_of: Any) -> None:
    server = web_server("--echo-delay", "0.01")
    page = page_of(server.base_url)
    page.wait_for_function(_ALL_COMPILED, polling=50)
    page.evaluate(_COUNT_HIGHLIGHTS)
    page.evaluate(_WATCH_STOP)
    lines = [f"item_{i} = {i}" for i in range(600)]
    send(page, "Code:\n\n```python\n" + "\n".join(lines) + "\n```")
    # Past 2,000 characters: the stopped answer's streamed nodes are what is kept and shown.
    page.wait_for_selector(f"{STREAMING_CODE}:has-text('item_200 ')")
    page.evaluate("document.getElementById('stop').click()")
    page.wait_for_selector(".status-note.stopped")
    # Stop hid itself in its own click handler, not when the answer was drawn again.
    assert page.evaluate("window.hiddenByClick") is True
    code = page.locator(".message.assistant .bubble pre code").text_content() or ""
    kept = code.rstrip("\n").split("\n")
    assert 200 < len(kept) < len(lines)
    assert kept[:-1] == lines[: len(kept) - 1] and lines[len(kept) - 1].startswith(kept[-1])
    # The open block, grown as plain text, was highlighted once, when the answer stopped.
    assert page.evaluate("window.highlighted.length") == 1
    assert page.locator(".message.assistant .bubble pre code .hljs-number").count() > 200
    assert page.errors == []


_ALL_COMPILED = "() => window.hljs && hljs.listLanguages().every(n => hljs.getLanguage(n).isCompiled)"


def test_highlight_js_loads_when_the_page_is_idle(web_server: Any, page_of: Any) -> None:
    server = web_server()
    page = page_of(server.base_url)
    # Nothing asked for it: it arrives anyway, every language compiled ahead of need.
    page.wait_for_function(_ALL_COMPILED, polling=50)
    # KaTeX is left for the first formula (loaded ahead, it slowed the first answer down).
    assert page.evaluate("window.katex === undefined")
    assert page.errors == []


BLOCKS = [f"def block_{i}(x):\n    return x * {i}  # {'padding ' * 20}" for i in range(4)]
LONG_ANSWER = "\n\n".join(
    f"Paragraph {i}: {'words that make the answer long enough to be kept, ' * 6}\n\n```python\n{code}\n```"
    for i, code in enumerate(BLOCKS)) + "\n\nThe end."

_COUNT_HIGHLIGHTS = """() => {
  window.highlighted = [];
  for (const name of ['highlight', 'highlightAuto']) {
    const original = hljs[name].bind(hljs);
    hljs[name] = (code, ...rest) => {
      if (code) window.highlighted.push(code);
      return original(code, ...rest);
    };
  }
}"""


def test_each_finished_code_block_is_highlighted_once(web_server: Any, page_of: Any) -> None:
    server = web_server("--echo-delay", "0.02")
    page = page_of(server.base_url)
    page.wait_for_function(_ALL_COMPILED, polling=50)
    page.evaluate(_COUNT_HIGHLIGHTS)
    assert len(LONG_ANSWER) > 2000  # (shorter answers are cheap to render again when drawn)
    send(page, LONG_ANSWER)
    assert wait_answers(page, 1)[0].endswith("The end.")
    # Streamed in many chunks, drawn again when it ended: still one highlight per block.
    assert page.evaluate("window.highlighted") == [code + "\n" for code in BLOCKS]
    assert page.locator(".message.assistant .bubble code:has(.hljs-keyword)").count() == len(BLOCKS)
    assert page.errors == []


@pytest.fixture
def held_libraries(browser: Any, web_server: Any) -> Iterator[tuple[Any, list[Any]]]:
    """A page whose requests for highlight.js and KaTeX are held until the test lets them go."""
    server = web_server()
    context = browser.new_context(base_url=server.base_url)
    held: list[Any] = []

    def hold(route: Any) -> None:
        held.append(route)

    context.route("**/vendor/highlight.js/highlight.min.js", hold)
    context.route("**/vendor/katex/katex.min.js", hold)
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.set_default_timeout(15_000)
    page.goto(server.base_url)
    page.locator("html.ready").wait_for(state="attached")
    try:
        yield page, held
    finally:
        context.close()


_COUNT_REDRAWS = """() => {
  window.redraws = 0;
  new MutationObserver((records) => {
    for (const r of records) window.redraws += r.addedNodes.length + r.removedNodes.length;
  }).observe(document.getElementById('messages'), { childList: true });
  document.querySelector('.message.assistant').dataset.marked = 'yes';
}"""


def test_a_library_arriving_late_fills_in_place_without_a_redraw(held_libraries: Any) -> None:
    page, held = held_libraries
    send(page, 'Code:\n\n```python\nprint("hi")\n```\n\nand $e^{i\\pi}+1=0$ inline.')
    wait_answers(page, 1)
    answer = page.locator(".message.assistant .bubble")
    # Shown without them meanwhile: the code as text, the formula as its source.
    assert answer.locator("code").first.inner_text().strip() == 'print("hi")'
    assert answer.locator(".math-pending").inner_text() == "e^{i\\pi}+1=0"
    page.wait_for_function("() => document.querySelectorAll('.message').length === 2")
    page.evaluate(_COUNT_REDRAWS)
    for _ in range(300):  # both asked for (KaTeX once the answer needed it), and held
        if len(held) == 2:
            break
        page.wait_for_timeout(50)
    assert len(held) == 2
    for route in held:
        route.continue_()
    page.wait_for_function("() => window.hljs && window.katex")
    marked = page.locator(".message.assistant[data-marked=yes] .bubble")
    marked.locator("code .hljs-string").wait_for()
    marked.locator(".katex").wait_for()
    # Filled in the answer that was there: no message drawn again.
    assert page.evaluate("window.redraws") == 0
    assert marked.locator("code .hljs-string").inner_text() == '"hi"'
    assert marked.locator(".math-pending").count() == 0
    assert page.errors == []
