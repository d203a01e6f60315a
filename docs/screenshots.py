"""Take the chat page's screenshots in docs/ (desktop light, desktop dark, phone).

    python docs/screenshots.py [--chromium /usr/bin/chromium]

Starts ``gprochat serve``'s app in-process (echo backend) on a free port, opens the
page in headless Chromium (Playwright), restores a sample conversation into the
page's localStorage (the echo backend only repeats, and a screenshot should show
what a model's Markdown, code and math look like), sends one live message, and
writes web-light.png, web-dark.png and web-phone.png next to this file.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from playwright.sync_api import sync_playwright

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    options = parser.parse_args()
    seed = f"localStorage.setItem('gprochat:conversations:v1', {json.dumps(json.dumps(SAMPLE))})"
    shots = [
        ("web-light.png", {"viewport": {"width": 1200, "height": 760}, "color_scheme": "light"}),
        ("web-dark.png", {"viewport": {"width": 1200, "height": 760}, "color_scheme": "dark"}),
        ("web-phone.png", {"viewport": {"width": 375, "height": 740}, "color_scheme": "light",
                           "is_mobile": True, "has_touch": True, "device_scale_factor": 1}),
    ]
    with BackgroundServer(ServerConfig()) as server, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=options.chromium, args=ARGS)
        for name, context_options in shots:
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
        browser.close()


if __name__ == "__main__":
    main()
