"""Take the chat page's screenshots in docs/ (desktop light, desktop dark, phone, an image).

    python docs/screenshots.py [--chromium /usr/bin/chromium] [--only web-image.png]

Starts ``gprochat serve``'s app in-process (echo backend) on a free port, opens the
page in headless Chromium (Playwright), restores a sample conversation into the
page's localStorage (the echo backend only repeats, and a screenshot should show
what a model's Markdown, code and math look like), sends one live message, and
writes web-light.png, web-dark.png and web-phone.png next to this file. Then
web-image.png: a picture drawn in the page (a canvas, as PNG) is pasted into the
message box, sent with a question, and shown in the conversation with the echo
backend's description of what it received.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, sync_playwright

from gprochat.server import BackgroundServer, ServerConfig

HERE = Path(__file__).parent
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

ANSWER = r"""Here is a small function that computes the **n-th Fibonacci number** in linear time:

```python
def fibonacci(n: int) -> int:
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a
```

| n | F(n) |
|---|------|
| 10 | 55 |
| 20 | 6765 |

It grows like $\varphi^n / \sqrt{5}$, where

$$\varphi = \frac{1 + \sqrt{5}}{2} \approx 1.618$$
"""

SAMPLE = {
    "version": 1,
    "current": "sample",
    "conversations": [
        {"id": "older", "title": "", "system": "", "updated": 1,
         "messages": [{"role": "user", "content": "Plan a weekend in Lisbon"},
                      {"role": "assistant", "content": "Day one: Alfama and the castle..."}]},
        {"id": "sample", "title": "", "system": "", "updated": 2,
         "messages": [{"role": "user", "content": "How do I compute Fibonacci numbers quickly?"},
                      {"role": "assistant", "content": ANSWER}]},
    ],
}


# A landscape drawn on a canvas, made a PNG and pasted into the message box.
PASTE_PICTURE = """async () => {
  const canvas = document.createElement("canvas");
  canvas.width = 480; canvas.height = 320;
  const g = canvas.getContext("2d");
  const sky = g.createLinearGradient(0, 0, 0, 320);
  sky.addColorStop(0, "#3b82f6"); sky.addColorStop(1, "#fde68a");
  g.fillStyle = sky; g.fillRect(0, 0, 480, 320);
  g.fillStyle = "#f59e0b"; g.beginPath(); g.arc(360, 110, 42, 0, 2 * Math.PI); g.fill();
  g.fillStyle = "#15803d"; g.beginPath(); g.moveTo(0, 320); g.lineTo(0, 220);
  g.quadraticCurveTo(140, 150, 260, 230); g.quadraticCurveTo(380, 300, 480, 210);
  g.lineTo(480, 320); g.fill();
  g.fillStyle = "#166534"; g.beginPath(); g.moveTo(0, 320); g.quadraticCurveTo(200, 240, 480, 320); g.fill();
  const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
  const transfer = new DataTransfer();
  transfer.items.add(new File([blob], "hills.png", { type: "image/png" }));
  document.getElementById("prompt").dispatchEvent(
    new ClipboardEvent("paste", { clipboardData: transfer, bubbles: true, cancelable: true }));
}"""


def image_shot(browser: Browser, base_url: str) -> None:
    context = browser.new_context(base_url=base_url, viewport={"width": 1200, "height": 760},
                                  color_scheme="light")
    page = context.new_page()
    page.goto("/")
    page.locator("html.ready").wait_for(state="attached")
    page.evaluate(PASTE_PICTURE)
    page.wait_for_selector("#attachments .attachment img")
    page.fill("#prompt", "What is in this picture?")
    page.press("#prompt", "Enter")
    page.wait_for_selector(".message.assistant:not(.streaming)")
    page.wait_for_function("() => [...document.querySelectorAll('.message-images img')]"
                           ".every((img) => img.complete && img.naturalWidth > 0)")
    page.evaluate("document.activeElement.blur()")
    page.screenshot(path=str(HERE / "web-image.png"))
    context.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--only", metavar="NAME", help="take this screenshot only")
    options = parser.parse_args()
    seed = f"localStorage.setItem('gprochat:conversations:v1', {json.dumps(json.dumps(SAMPLE))})"
    shots: list[tuple[str, dict[str, Any]]] = [
        ("web-light.png", {"viewport": {"width": 1200, "height": 760}, "color_scheme": "light"}),
        ("web-dark.png", {"viewport": {"width": 1200, "height": 760}, "color_scheme": "dark"}),
        ("web-phone.png", {"viewport": {"width": 375, "height": 740}, "color_scheme": "light",
                           "is_mobile": True, "has_touch": True, "device_scale_factor": 1}),
    ]
    with BackgroundServer(ServerConfig()) as server, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=options.chromium, args=ARGS)
        for name, context_options in shots:
            if options.only not in (None, name):
                continue
            context = browser.new_context(base_url=server.base_url, **context_options)
            page = context.new_page()
            page.goto("/")
            page.evaluate(seed)
            page.reload()
            page.fill("#prompt", "Thanks! Can you also show it *recursively*?")
            page.press("#prompt", "Enter")
            page.wait_for_selector(".message.assistant:nth-of-type(4):not(.streaming)")
            page.wait_for_function("() => window.katex && window.hljs")
            page.wait_for_timeout(300)
            page.evaluate("document.getElementById('scroller').scrollTop = 0")
            page.evaluate("document.activeElement.blur()")
            page.screenshot(path=str(HERE / name))
            context.close()
        if options.only in (None, "web-image.png"):
            image_shot(browser, server.base_url)
        browser.close()


if __name__ == "__main__":
    main()
