"""The chat page in Debian's Chromium, through nginx and Caddy as deploy/ configures them.

Over HTTPS (HTTP/2 where the proxy offers it) under the /chat/ prefix: the page, its
scripts and styles, the libraries it loads on first need (highlight.js, KaTeX and its
fonts) and /api/generate all go through the proxy, and none fails.
"""

from __future__ import annotations

from typing import Any, Callable

from gprochat.server.backends.echo import EchoBackend

from ..server.web.conftest import browser, page_of  # noqa: F401  (fixtures)
from .conftest import PREFIX, Proxy

MARKDOWN = """Code and math through the proxy:

```python
print("hi")
```

Inline $e^{i\\pi}+1=0$ and display:

$$\\frac{1}{2}$$
"""


def test_the_chat_page_works_through_the_proxy_under_the_prefix(
    deployment: Callable[..., Proxy], page_of: Any,  # noqa: F811
) -> None:
    proxy = deployment("--backend", "echo", "--echo-delay", "0.05")
    page = page_of(proxy.site_url + "/", ignore_https_errors=True)
    responses: list[tuple[str, int]] = []
    failed: list[str] = []
    page.on("response", lambda response: responses.append((response.url, response.status)))
    page.on("requestfailed", lambda request: failed.append(f"{request.url}: {request.failure}"))
    page.reload()
    page.fill("#prompt", MARKDOWN)
    page.press("#prompt", "Enter")
    page.wait_for_function("() => document.querySelectorAll('.message.assistant:not(.streaming)').length")
    page.wait_for_function("() => window.hljs && window.katex")
    answer = page.locator(".message.assistant .bubble")
    answer.locator(".katex-display").wait_for()
    page.wait_for_function("() => document.fonts.status === 'loaded'")
    assert answer.locator("code .hljs-string").inner_text() == '"hi"'
    assert answer.inner_text().startswith(EchoBackend.PREFIX.strip())
    urls = [url for url, _ in responses]
    assert any(url.endswith("/api/generate") for url in urls)
    assert any(url.endswith(".woff2") for url in urls)
    assert any("/vendor/katex/" in url for url in urls)
    assert all(url.startswith(proxy.url + PREFIX) for url in urls), urls
    assert [(url, status) for url, status in responses if status >= 400] == []
    assert failed == []
    assert page.errors == []
