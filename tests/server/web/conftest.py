"""A real headless Chromium (Debian's package, driven by Playwright) and real servers.

The browser tests are skipped when Chromium or Playwright is missing, and fail
instead when the ``CI`` environment variable is set: CI must install them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from ...processes import ServeProcess, free_port

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _chromium_path() -> str | None:
    """``GPROCHAT_TEST_CHROMIUM`` if set (and only it), else Debian's ``chromium``."""
    chosen = os.environ.get("GPROCHAT_TEST_CHROMIUM")
    candidates = (chosen,) if chosen else ("/usr/bin/chromium", shutil.which("chromium"))
    for candidate in candidates:
        if candidate and os.path.exists(candidate):
            return candidate
    return None


def _missing(message: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI must install it (.ci/run installs Debian's chromium)")
    pytest.skip(message)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One Chromium per test module; each test opens its own context (fresh storage).

    Not per session: while Playwright's synchronous API is alive, its event loop is
    the main thread's running loop, and the asyncio tests of later modules could not
    start theirs.
    """
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (pip install -e '.[test]')")
    executable = _chromium_path()
    if executable is None:
        chosen = os.environ.get("GPROCHAT_TEST_CHROMIUM")
        _missing(f"GPROCHAT_TEST_CHROMIUM={chosen} does not exist" if chosen
                 else "chromium is not installed (Debian: apt-get install -y chromium)")
    with sync_playwright() as playwright:
        # launch() gives Chromium a fresh temporary profile, removed when it closes.
        instance = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture
def page_of(browser: Any) -> Iterator[Any]:
    """``page_of(base_url, **context_options)`` -> a page on a fresh browser context."""
    contexts: list[Any] = []

    def open_page(base_url: str, **options: Any) -> Any:
        context = browser.new_context(base_url=base_url, **options)
        contexts.append(context)
        page = context.new_page()
        page.errors = []  # uncaught exceptions in the page: a test fails on any
        page.on("pageerror", lambda error: page.errors.append(str(error)))
        page.set_default_timeout(15_000)
        page.goto(base_url)
        # The page reads its conversations (IndexedDB, asynchronous), then says so.
        page.locator("html.ready").wait_for(state="attached")
        return page

    yield open_page
    for context in contexts:
        context.close()


class WebServer(ServeProcess):
    """``gprochat serve ARGS`` in a subprocess on a free port, its log (JSON) in a file."""

    def __init__(self, *args: str) -> None:
        # A port of its own, not the start-up line's: deploy/'s unit flags may set any log level.
        super().__init__("--log-format", "json", *args, port=free_port())

    def access_log(self, route: str) -> list[dict[str, Any]]:
        """The access-log entries for ``route`` so far."""
        entries = []
        for line in self.output().splitlines():
            if line.startswith("{"):
                entry = json.loads(line)
                if entry.get("logger") == "gprochat.access" and entry.get("route") == route:
                    entries.append(entry)
        return entries

    def metric(self, name: str) -> float:
        with urllib.request.urlopen(self.base_url + "/metrics", timeout=5) as response:
            for line in response.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
        raise AssertionError(f"metric {name} not found")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        """Stop the server and remove its log."""
        try:
            return super().stop(sig, timeout)
        finally:
            self.close()


@pytest.fixture
def web_server() -> Iterator[Any]:
    """``web_server(*serve_args)`` -> a started ``WebServer``, stopped after the test."""
    servers: list[WebServer] = []

    def start(*args: str) -> WebServer:
        server = WebServer(*args)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
