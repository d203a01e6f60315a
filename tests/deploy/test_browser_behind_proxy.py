"""The chat page in Debian's Chromium, through nginx and Caddy as deploy/ configures them.

Over HTTPS (HTTP/2 where the proxy offers it) under the /chat/ prefix: the page, its
scripts and styles, the libraries it loads on first need (highlight.js, KaTeX and its
fonts) and /api/generate all go through the proxy, and none fails.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from gprochat.server.backends.echo import EchoBackend

from ..server.web.conftest import browser  # noqa: F401  (fixture)
from .conftest import PREFIX, Proxy

MARKDOWN = """Code and math through the proxy:

```python
print("hi")
```

Inline $e^{i\\pi}+1=0$ and display:

$$\\frac{1}{2}$$
"""


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:  # noqa: F811
    """A fresh browser context that accepts the test's self-signed certificate."""
    context = browser.new_context(ignore_https_errors=True)
    yield context
    context.close()


def test_the_chat_page_works_through_the_proxy_under_the_prefix(
    deployment: Callable[..., Proxy], context: Any,
) -> None:
    proxy = deployment("--backend", "echo", "--echo-delay", "0.05")
    page = context.new_page()
    page.set_default_timeout(15_000)
    responses: list[tuple[str, int]] = []
    failed: list[str] = []
    errors: list[str] = []
    page.on("response", lambda response: responses.append((response.url, response.status)))
    page.on("requestfailed", lambda request: failed.append(f"{request.url}: {request.failure}"))
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(proxy.site_url + "/")
    page.fill("#prompt", MARKDOWN)
    page.press("#prompt", "Enter")
    page.wait_for_function("() => document.querySelectorAll('.message.assistant:not(.streaming)').length")
    page.wait_for_function("() => window.hljs && window.katex")
    answer = page.locator(".message.assistant .bubble")
    answer.locator(".katex-display").wait_for()
    page.wait_for_function("() => document.fonts.status === 'loaded'")
    page.wait_for_load_state("networkidle")
    assert answer.locator("code .hljs-string").inner_text() == '"hi"'
    assert answer.inner_text().startswith(EchoBackend.PREFIX.strip())
    # TLS and HTTP/2 from the browser to the proxy.
    assert page.evaluate("performance.getEntriesByType('navigation')[0].nextHopProtocol") == "h2"
    urls = [url for url, _ in responses]
    assert any(url.endswith("/api/generate") for url in urls)
    assert any(url.endswith(".woff2") for url in urls)
    assert any("/vendor/katex/" in url for url in urls)
    assert all(url.startswith(proxy.url + PREFIX) for url in urls), urls
    assert [(url, status) for url, status in responses if status >= 400] == []
    assert failed == []
    assert errors == []
