"""Per-conversation settings in a real Chromium: the temperature.

The server's backend answers with the temperature it was asked for, so the answer
proves what arrived (the echo backend ignores it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..test_routes_temperature import TemperatureBackend
from .test_browser import reload, send, sent_bodies, wait_answers


def temperature(page: Any) -> Any:
    """The field, found as a person (or a screen reader) finds it: by its label."""
    return page.get_by_label("Temperature", exact=True)


def test_the_temperature_belongs_to_the_conversation_and_reaches_the_backend(
    make_server: Any, page_of: Any
) -> None:
    server = make_server(backend=TemperatureBackend())
    page = page_of(server.base_url)
    bodies = sent_bodies(page)
    # None set: none sent, the backend's default answers.
    assert temperature(page).input_value() == ""
    send(page, "First")
    assert wait_answers(page, 1) == ["temperature=None"]
    assert "temperature" not in bodies[-1]
    # Set, it is sent with each request and reaches the backend.
    temperature(page).fill("0.7")
    send(page, "Second")
    assert wait_answers(page, 2)[-1] == "temperature=0.7"
    assert bodies[-1]["temperature"] == 0.7
    # Out of range: marked invalid, not stored; the last valid value stays.
    temperature(page).fill("3")
    assert temperature(page).get_attribute("aria-invalid") == "true"
    # Kept with the conversation across a reload, and a retry asks at it again.
    reload(page)
    bodies = sent_bodies(page)
    assert temperature(page).input_value() == "0.7"
    page.click(".message.assistant .retry")
    page.wait_for_function("() => !document.querySelector('.message.assistant.streaming')"
                           " && document.querySelectorAll('.message.assistant:not(.streaming)').length === 2")
    assert bodies[-1]["temperature"] == 0.7
    # Export as JSON names it.
    with page.expect_download() as download:
        page.click("#more")
        page.click("#export-json")
    assert json.loads(Path(download.value.path()).read_text(encoding="utf-8"))["temperature"] == 0.7
    # A new conversation has its own: none.
    page.click("#new-chat")
    assert temperature(page).input_value() == ""
    send(page, "Elsewhere")
    assert wait_answers(page, 1) == ["temperature=None"]
    assert "temperature" not in bodies[-1]
    temperature(page).fill("0")
    send(page, "Cold")
    assert wait_answers(page, 2)[-1] == "temperature=0.0"
    assert bodies[-1]["temperature"] == 0
    # Back in the first conversation: its 0.7 again; emptied, the default again.
    page.click("#conversation-list button:has-text('First')")
    assert temperature(page).input_value() == "0.7"
    temperature(page).fill("")
    send(page, "Default again")
    assert wait_answers(page, 3)[-1] == "temperature=None"
    assert "temperature" not in bodies[-1]
    assert page.errors == []
