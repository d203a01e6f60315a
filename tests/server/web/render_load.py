"""How busy the main thread is while a 40 KB Markdown answer streams (not a test).

    PYTHONPATH=src python tests/server/web/render_load.py

Streams about 38 KB of Markdown (headings, paragraphs, lists) from the echo backend
(12 words a chunk, 10 ms apart) into the page in headless Chromium and prints the
long tasks (over 50 ms, from a ``longtask`` PerformanceObserver) as a share of the
streaming time. Run it with another checkout's ``src`` on PYTHONPATH for a baseline
on the same machine. The measurement of record is benchmark B9 (``python -m benchmarks
--only B9``, ``benchmarks/b9_page.py``), which docs/web.md and docs/benchmarks.md report.
"""

from __future__ import annotations

import json
import time

from playwright.sync_api import sync_playwright

from gprochat.server import BackgroundServer, ServerConfig, create_app
from gprochat.server.backends.echo import EchoBackend

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
PARAGRAPH = "Some **bold** text with `code` and a [link](https://example.org) in a sentence. " * 3
TEXT = "\n\n".join(f"## Section {i}\n\n{PARAGRAPH}\n\n- item one\n- item two" for i in range(120))[:40000]
OBSERVE = ("() => { window.__long = []; new PerformanceObserver(list => { for (const entry of"
           " list.getEntries()) window.__long.push(entry.duration); }).observe({type: 'longtask'}); }")


def main() -> None:
    app = create_app(ServerConfig(rate_limit=None), backend=EchoBackend(delay=0.01, words_per_chunk=12))
    with BackgroundServer(app=app) as server, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        page = browser.new_page()
        page.goto(server.base_url)
        page.wait_for_selector("html.ready", state="attached")
        page.evaluate(OBSERVE)
        page.evaluate("text => { document.getElementById('prompt').value = text; }", TEXT)
        started = time.monotonic()
        page.press("#prompt", "Enter")
        page.wait_for_selector(".message.assistant:not(.streaming)", timeout=300_000)
        elapsed = time.monotonic() - started
        tasks = page.evaluate("window.__long")
        print(json.dumps({
            "chars": len(TEXT), "stream_s": round(elapsed, 2), "long_tasks": len(tasks),
            "long_total_ms": round(sum(tasks)), "long_max_ms": round(max(tasks, default=0)),
            "busy_share": round(sum(tasks) / 1000 / elapsed, 3),
        }))
        browser.close()


if __name__ == "__main__":
    main()
