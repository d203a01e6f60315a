"""The direct ASGI path for POST /api/generate: same answers, and the rest still FastAPI's."""

from __future__ import annotations

import aiohttp

from gprochat.server import BackgroundServer, ServerConfig, create_app

from .helpers import post, signed


async def test_fast_path_streams_and_keeps_headers_metrics_and_the_405() -> None:
    app = create_app(ServerConfig(rate_limit=None))
    with BackgroundServer(app=app) as server:
        status, headers, body = await post(server.base_url, signed("one two three"))
        assert status == 200
        assert body.decode().endswith("one two three")
        assert headers["Content-Type"] == "text/plain; charset=utf-8"
        assert headers["Cache-Control"] == "no-cache"
        assert headers["Transfer-Encoding"] == "chunked"
        # A rejection on the direct path is the protocol's JSON error, as before.
        status, _, body = await post(server.base_url, b"{not json")
        assert status == 400 and b'"error"' in body
        # Other methods on the same path still reach FastAPI's router.
        async with aiohttp.ClientSession() as session:
            async with session.get(server.base_url + "/api/generate") as response:
                assert response.status == 405
            async with session.get(server.base_url + "/metrics") as response:
                text = await response.text()
        # Metrics are labelled with the route, not "other".
        assert 'route="/api/generate",status="200"' in text
        assert 'route="/api/generate",status="400"' in text
        assert app.state.guard.streams.in_flight == 0
