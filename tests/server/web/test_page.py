"""The chat page over HTTP: headers, assets, caching, the switch, the guard."""

from __future__ import annotations

import gzip
import re
import urllib.error
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import pytest

from gprochat.server.web import CONTENT_SECURITY_POLICY, WEB_ROOT

from ...conftest import ServerFactory
from ...processes import clean_env, served


def fetch(
    url: str, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.inline_script = False
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_script = True


def parse(html: bytes) -> _Tags:
    tags = _Tags()
    tags.feed(html.decode())
    return tags


def test_the_page_has_strict_security_headers_and_no_inline_script(make_server: ServerFactory) -> None:
    server = make_server()
    status, headers, body = fetch(server.base_url + "/")
    assert status == 200
    assert headers["content-type"] == "text/html; charset=utf-8"
    csp = headers["content-security-policy"]
    assert csp == CONTENT_SECURITY_POLICY
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["script-src"] == "'self'"
    assert directives["connect-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    # Images the person attaches are shown from data: and blob: URLs, and from nowhere else.
    assert directives["img-src"] == "'self' data: blob:"
    assert "unsafe-eval" not in csp and "unsafe-inline" not in directives["script-src"]
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["cache-control"] == "no-cache"
    page = parse(body)
    assert not page.inline_script
    scripts = [attrs for tag, attrs in page.tags if tag == "script"]
    assert scripts and all(attrs.get("src") for attrs in scripts)
    assert not any(name.startswith("on") for _, attrs in page.tags for name in attrs)


def test_the_page_tells_its_script_the_key_and_whether_a_password_is_needed(
    make_server: ServerFactory,
) -> None:
    key = 'k"<script>alert(1)</script>'
    _, _, body = fetch(make_server(secret_key=key, passwords=("pw",)).base_url + "/")
    metas = {attrs.get("name"): attrs.get("content") for tag, attrs in parse(body).tags if tag == "meta"}
    assert metas["gprochat:secret-key"] == key  # escaped in the HTML, intact once parsed
    assert b"<script>alert" not in body
    assert metas["gprochat:password"] == "required"
    _, _, open_body = fetch(make_server().base_url + "/")
    metas = {attrs.get("name"): attrs.get("content") for tag, attrs in parse(open_body).tags if tag == "meta"}
    assert metas["gprochat:password"] == "none"


def test_the_page_tells_its_script_the_limits_on_images(make_server: ServerFactory) -> None:
    _, _, body = fetch(make_server(max_image_bytes=5000, max_images=3, max_body_bytes=70000).base_url + "/")
    metas = {attrs.get("name"): attrs.get("content") for tag, attrs in parse(body).tags if tag == "meta"}
    assert metas["gprochat:max-image-bytes"] == "5000"
    assert metas["gprochat:max-images"] == "3"
    assert metas["gprochat:max-body-bytes"] == "70000"


def test_assets_are_versioned_typed_and_cached(make_server: ServerFactory) -> None:
    server = make_server()
    _, _, body = fetch(server.base_url + "/")
    urls = re.findall(rb'(?:src|href)="\./(assets/[^"]+)"', body)
    assert len(urls) >= 6
    expected_types = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
                      ".svg": "image/svg+xml"}
    for url in ("/" + u.decode() for u in urls):
        status, headers, content = fetch(server.base_url + url)
        assert status == 200, url
        assert headers["content-type"] == expected_types[Path(url).suffix]
        assert headers["cache-control"] == "public, max-age=31536000, immutable"
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        status, again, content_304 = fetch(server.base_url + url, headers={"If-None-Match": headers["etag"]})
        assert (status, content_304, again["etag"]) == (304, b"", headers["etag"])
        assert content
    version = urls[0].decode().split("/")[1]
    # The lazily loaded libraries and KaTeX's fonts are there too.
    for path, content_type in [("vendor/katex/katex.min.js", "text/javascript; charset=utf-8"),
                               ("vendor/highlight.js/highlight.min.js", "text/javascript; charset=utf-8"),
                               ("vendor/katex/fonts/KaTeX_Main-Regular.woff2", "font/woff2")]:
        status, headers, _ = fetch(f"{server.base_url}/assets/{version}/{path}")
        assert (status, headers["content-type"]) == (200, content_type)
    # A page from an older release still gets the file, but not cached for good.
    status, headers, _ = fetch(server.base_url + "/assets/0ld/js/main.js")
    assert (status, headers["cache-control"]) == (200, "no-cache")


def test_text_is_sent_gzipped_to_clients_that_accept_it(make_server: ServerFactory) -> None:
    server = make_server()
    _, _, page = fetch(server.base_url + "/")
    url = server.base_url + "/" + re.findall(rb'src="\./(assets/[^"]+markdown-it[^"]+)"', page)[0].decode()
    _, plain_headers, plain = fetch(url)
    status, headers, packed = fetch(url, headers={"Accept-Encoding": "gzip, br"})
    assert status == 200
    assert headers["content-encoding"] == "gzip" and "content-encoding" not in plain_headers
    assert gzip.decompress(packed) == plain and len(packed) < len(plain) / 2
    assert headers["vary"] == plain_headers["vary"] == "Accept-Encoding"
    assert headers["etag"] != plain_headers["etag"]
    status, _, _ = fetch(url, headers={"Accept-Encoding": "gzip", "If-None-Match": headers["etag"]})
    assert status == 304
    # Fonts are compressed already: sent as they are.
    version = url.split("/")[4]
    font = f"{server.base_url}/assets/{version}/vendor/katex/fonts/KaTeX_Main-Regular.woff2"
    _, font_headers, _ = fetch(font, headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in font_headers


def test_unknown_assets_and_source_files_are_not_served(make_server: ServerFactory) -> None:
    server = make_server()
    for path in ("/assets/x/nope.js", "/assets/x/__init__.py", "/assets/x/index.html",
                 "/assets/x/../__init__.py", "/assets/x/vendor/katex/LICENSE", "/assets/x/%2e%2e/config.py"):
        assert fetch(server.base_url + path)[0] == 404, path


def test_head_and_etag_on_the_page(make_server: ServerFactory) -> None:
    server = make_server()
    status, headers, body = fetch(server.base_url + "/", method="HEAD")
    assert (status, body) == (200, b"")
    assert headers["content-type"] == "text/html; charset=utf-8"
    status, _, body = fetch(server.base_url + "/", headers={"If-None-Match": headers["etag"]})
    assert (status, body) == (304, b"")


def test_page_and_assets_are_counted_under_their_routes(make_server: ServerFactory) -> None:
    server = make_server()
    _, _, page = fetch(server.base_url + "/")
    fetch(server.base_url + "/" + re.findall(rb'src="\./(assets/[^"]+)"', page)[0].decode())
    metrics = fetch(server.base_url + "/metrics")[2].decode()
    assert 'gprochat_http_requests_total{method="GET",route="/",status="200"} 1.0' in metrics
    assert 'route="/assets/{version}/{path:path}",status="200"} 1.0' in metrics


def test_web_false_serves_no_page(make_server: ServerFactory) -> None:
    server = make_server(web=False)
    assert fetch(server.base_url + "/")[0] == 404
    assert fetch(server.base_url + "/healthz")[0] == 200


@pytest.mark.parametrize(("args", "env"), [(("--no-web",), {}), ((), {"GPROCHAT_WEB": "0"})])
def test_serve_flag_and_variable_turn_the_page_off(args: tuple[str, ...], env: dict[str, str]) -> None:
    with served(*args, env=clean_env(**env)) as base_url:
        assert fetch(base_url + "/")[0] == 404
    with served() as base_url:
        assert fetch(base_url + "/")[0] == 200


def test_the_page_is_rate_limited_apart_from_the_api(make_server: ServerFactory) -> None:
    server = make_server(rate_limit="2/minute")
    assert [fetch(server.base_url + "/")[0] for _ in range(2)] == [200, 200]
    status, headers, body = fetch(server.base_url + "/")
    assert status == 429
    assert int(headers["retry-after"]) >= 1
    assert b"Too many requests" in body
    assert headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    # Assets are not counted (one page load fetches several).
    _, _, page_body = fetch(server.base_url + "/assets/x/js/main.js")
    assert page_body


def test_every_vendored_library_ships_with_its_license() -> None:
    vendor = WEB_ROOT / "vendor"
    libraries = [path for path in vendor.iterdir() if path.is_dir()]
    assert {path.name for path in libraries} >= {"markdown-it", "dompurify", "highlight.js", "katex"}
    for library in libraries:
        names = {path.name.lower() for path in library.iterdir()}
        assert names & {"license", "license.txt"}, library.name
    versions = (vendor / "VERSIONS").read_text()
    for library in libraries:
        assert library.name in versions
