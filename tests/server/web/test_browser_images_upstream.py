"""Images from the chat page, in a real Chromium, to a scripted Gemini upstream.

``gprochat serve --backend gemini`` runs as a process, pointed at a ``ScriptedServer``
on loopback that records the raw bodies it receives: the images a person attaches
(by the file chooser and by paste) must reach it as ``inline_data`` whose base64 is
the text the page sent and decodes to the files' very bytes, in the new message and
again in the history of the next one.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest

from ...image_samples import png
from ...scripted import Fleet, ScriptedServer
from ..test_images_end_to_end import LARGE, answering_as_gemini, gemini_turns
from .test_browser import sent_bodies, wait_answers
from .test_browser_images import choose, paste, wait_thumbnails

SMALL = png(40, 30, seed=7)


@pytest.fixture
def gemini_upstream() -> Iterator[ScriptedServer]:
    """A scripted Gemini upstream on a loop of its own (the page's test is synchronous)."""
    with Fleet({"gemini": answering_as_gemini("Two ", "pictures.")}).in_thread() as fleet:
        yield fleet.servers["gemini"]


def test_images_attached_on_the_page_reach_the_gemini_upstream_byte_identical(
    gemini_upstream: ScriptedServer, web_server: Any, page_of: Any
) -> None:
    server = web_server("--backend", "gemini", "--gemini-api-key", "AIza-test",
                        "--gemini-base-url", gemini_upstream.base_url)
    page = page_of(server.base_url)
    bodies = sent_bodies(page)
    choose(page, ("large.png", "image/png", LARGE))
    paste(page, "image.png", "image/png", SMALL)
    wait_thumbnails(page, 2)
    page.fill("#prompt", "What is in these?")
    page.press("#prompt", "Enter")
    assert wait_answers(page, 1) == ["Two pictures."]

    [request] = gemini_upstream.requests
    assert gemini_turns(request) == [("user", [("image/png", LARGE), ("image/png", SMALL)],
                                      "What is in these?")]
    # The base64 the upstream got is the very text the page sent.
    [body] = bodies
    sent = [part["inline_data"]["data"] for part in body["messages"][-1]["parts"] if "inline_data" in part]
    assert sent == [base64.b64encode(LARGE).decode(), base64.b64encode(SMALL).decode()]
    assert all(f'"data": "{data}"'.encode() in request.body for data in sent)

    # The next message carries them in its history, still intact.
    page.fill("#prompt", "And now?")
    page.press("#prompt", "Enter")
    assert wait_answers(page, 2) == ["Two pictures.", "Two pictures."]
    assert gemini_turns(gemini_upstream.requests[1]) == [
        ("user", [("image/png", LARGE), ("image/png", SMALL)], "What is in these?"),
        ("model", [], "Two pictures."),
        ("user", [], "And now?"),
    ]
    assert len(gemini_upstream.requests) == 2
    assert page.errors == []
