"""The chat page: ``GET /`` and its assets, served from the package.

``web_routes(config)`` returns the Starlette routes; ``install_web(app)`` adds them
to an app whose ``app.state`` carries ``config`` and ``guard``. Everything the page
needs (our scripts and styles, the vendored libraries, KaTeX's fonts) ships in this
folder; nothing comes from a CDN.

URLs and caching: assets live under ``/assets/<version>/...``, where ``<version>``
hashes every file here, so a new release changes every asset URL; those responses
are ``immutable`` for a year. The page itself is ``no-cache`` with an ``ETag``.
The page refers to them relatively (``./assets/...``, ``api/generate``), so it also
works behind a reverse proxy that serves the site under a path prefix. Relative
imports between our ES modules stay under the same versioned prefix.

The page learns the deployment's public secret key, whether a password is needed
and the limits on images and request bodies from ``<meta>`` tags (the
Content-Security-Policy allows no inline script); GeminiProChat bakes the same key
into its bundle at build time.
"""

from __future__ import annotations

import gzip
import hashlib
import html
from dataclasses import dataclass
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ... import __version__
from ..config import ServerConfig
from ..guard import RequestGuard
from ..refusals import Refusal

__all__ = ["CONTENT_SECURITY_POLICY", "install_web", "web_routes"]

WEB_ROOT = Path(__file__).parent

#: No inline script, no eval, no third-party origin. Inline ``style`` attributes are
#: allowed (KaTeX positions glyphs with them); style elements must come from us.
CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "style-src-attr 'unsafe-inline'",
    "img-src 'self' data: blob:",
    "font-src 'self'",
    "connect-src 'self'",
    "manifest-src 'self'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
    # DOM sinks take only values made by the page's policies: DOMPurify's (HTML) and
    # ours (the vendored scripts highlight.js and KaTeX, loaded on first need).
    "require-trusted-types-for 'script'",
    "trusted-types dompurify gprochat",
])

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}

_ASSET_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".woff2": "font/woff2",
    ".png": "image/png",
}
_IMMUTABLE = "public, max-age=31536000, immutable"


@dataclass(frozen=True)
class _Asset:
    """A file's bytes, type and ETag, and its gzip twin for text (compressed once per process)."""

    body: bytes
    media_type: str
    etag: str
    gzipped: bytes | None = None

    @classmethod
    def of(cls, body: bytes, media_type: str) -> _Asset:
        compressible = not media_type.startswith(("font/", "image/png"))
        return cls(body, media_type, _etag(body), gzip.compress(body, mtime=0) if compressible else None)


def _etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:20] + '"'


def _load_assets() -> dict[str, _Asset]:
    """Every servable file under this folder, by its path relative to it."""
    assets: dict[str, _Asset] = {}
    for path in sorted(WEB_ROOT.rglob("*")):
        media_type = _ASSET_TYPES.get(path.suffix)
        if media_type is None or not path.is_file():
            continue
        assets[path.relative_to(WEB_ROOT).as_posix()] = _kept_asset(path, media_type)
    return assets


#: Each file's ``_Asset`` by path, with the modification time and size it was read at.
#: Every app of the process shares them (gzip of the vendored libraries is most of the
#: cost of building an app); a file changed on disk is read again by the next app.
_kept: dict[Path, tuple[tuple[int, int], _Asset]] = {}


def _kept_asset(path: Path, media_type: str) -> _Asset:
    stat = path.stat()
    version = (stat.st_mtime_ns, stat.st_size)
    kept = _kept.get(path)
    if kept is None or kept[0] != version:
        kept = (version, _Asset.of(path.read_bytes(), media_type))
        _kept[path] = kept
    return kept[1]


def _not_modified(request: Request, etag: str) -> bool:
    given = request.headers.get("if-none-match", "")
    return any(tag.strip().removeprefix("W/") in (etag, "*") for tag in given.split(","))


def _answer(request: Request, asset: _Asset, cache_control: str) -> Response:
    headers = {**SECURITY_HEADERS, "Cache-Control": cache_control}
    body, etag = asset.body, asset.etag
    if asset.gzipped is not None:
        headers["Vary"] = "Accept-Encoding"
        if "gzip" in request.headers.get("accept-encoding", ""):
            body, etag = asset.gzipped, asset.etag[:-1] + '-gzip"'
            headers["Content-Encoding"] = "gzip"
    headers["ETag"] = etag
    if _not_modified(request, etag):
        headers.pop("Content-Encoding", None)
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=asset.media_type, headers=headers)


def _not_found(what: str) -> Response:
    return Response(f"Not found: {what}\n", status_code=404, media_type="text/plain; charset=utf-8",
                    headers=SECURITY_HEADERS)


def render_page(config: ServerConfig, assets_url: str) -> bytes:
    """``index.html`` with the asset prefix and the site's public settings filled in."""
    template = (WEB_ROOT / "index.html").read_text(encoding="utf-8")
    values = {
        "assets": assets_url,
        "secret_key": config.secret_key,
        "password": "required" if config.passwords else "none",
        "version": __version__,
        # The page refuses what the server would (attachments.js); 0 means no limit.
        "max_image_bytes": str(config.max_image_bytes),
        "max_images": str(config.max_images),
        "max_body_bytes": str(config.max_body_bytes),
    }
    for name, value in values.items():
        template = template.replace("{{" + name + "}}", html.escape(value, quote=True))
    return template.encode()


def web_routes(config: ServerConfig) -> list[BaseRoute]:
    """``GET /`` (and HEAD) and ``GET /assets/<version>/<path>``, for ``config``'s site."""
    assets = _load_assets()
    version = hashlib.sha256(
        b"".join(name.encode() + asset.etag.encode() for name, asset in assets.items())
        + __version__.encode()
    ).hexdigest()[:12]
    body = render_page(config, f"./assets/{version}")
    page = _Asset.of(body, "text/html; charset=utf-8")

    async def index(request: Request) -> Response:
        _record_route(request, routes[0])
        # The page is counted apart from the API (like /api/auth), so that browsing
        # does not use up a client's allowance of answers.
        guard: RequestGuard = request.app.state.guard
        try:
            await guard.rate_limiter.check(request, scope="web")
        except Refusal as exc:
            return Response(exc.message + "\n", status_code=exc.status,
                            media_type="text/plain; charset=utf-8",
                            headers={**SECURITY_HEADERS, **exc.headers})
        return _answer(request, page, "no-cache")

    async def asset(request: Request) -> Response:
        _record_route(request, routes[1])
        path = str(request.path_params["path"])
        found = assets.get(path)
        if found is None:
            return _not_found(path)
        # An old page asking for an old version still gets today's file, but not for keeps.
        current = request.path_params["version"] == version
        return _answer(request, found, _IMMUTABLE if current else "no-cache")

    routes: list[BaseRoute] = [
        Route("/", index, methods=["GET", "HEAD"], name="web_index"),
        Route("/assets/{version}/{path:path}", asset, methods=["GET", "HEAD"], name="web_asset"),
    ]
    return routes


def _record_route(request: Request, route: BaseRoute) -> None:
    # Metrics and the access log label requests by scope["route"]; Starlette's router
    # sets it, FastAPI's sets it for its own routes only.
    request.scope.setdefault("route", route)


def install_web(app: Starlette) -> None:
    """Add the chat page's routes to ``app`` (Starlette or FastAPI; ``app.state.config`` set)."""
    app.router.routes.extend(web_routes(app.state.config))

