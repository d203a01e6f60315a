"""What keeps a long streaming answer cheap, seen from the page: an open code block
grows in place (never redrawn), a long one is kept as grown, and Stop hides at once.
(How cheap is measured by benchmark B9, not here.)"""

from __future__ import annotations

from typing import Any

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


def test_stop_in_a_code_block_keeps_what_arrived(web_server: Any, page_of: Any) -> None:
    server = web_server("--echo-delay", "0.05")
    page = page_of(server.base_url)
    lines = [f"item_{i} = {i}" for i in range(200)]
    send(page, "Code:\n\n```\n" + "\n".join(lines) + "\n```")
    page.wait_for_selector(f"{STREAMING_CODE}:has-text('item_10 ')")
    page.click("#stop")
    page.wait_for_selector(".status-note.stopped")
    assert page.locator("#stop").is_hidden()
    code = page.locator(".message.assistant .bubble pre code").text_content() or ""
    kept = code.rstrip("\n").split("\n")
    assert 10 < len(kept) < len(lines)
    assert kept[:-1] == lines[: len(kept) - 1] and lines[len(kept) - 1].startswith(kept[-1])
    assert page.errors == []
