"""deploy/gprochat.env with its scale-out lines on: workers sharing Redis, behind nginx."""

from __future__ import annotations

import json
from contextlib import AbstractAsyncContextManager
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from ..processes import clean_env, served
from ..server.conftest import RedisProcess, redis_server  # noqa: F401  (fixture)
from ..server.helpers import signed
from .conftest import DEPLOY, Certificate, Nginx, require, tls_session, unit_serve_flags


def environment_file(redis_url: str) -> dict[str, str]:
    """deploy/gprochat.env's variables, its commented-out scale-out lines switched on."""
    settings: dict[str, str] = {}
    for line in (DEPLOY / "gprochat.env").read_text().splitlines():
        line = line.strip().removeprefix("#") if line.startswith("#GPROCHAT_") else line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            settings[name] = value
    assert settings["GPROCHAT_WORKERS"] == "4", settings
    assert settings["GPROCHAT_REDIS_URL"] == "redis://127.0.0.1:6379/0", settings
    return {**settings, "GPROCHAT_WORKERS": "2", "GPROCHAT_REDIS_URL": redis_url}


def _session_from(
    source: str, certificate: Certificate
) -> AbstractAsyncContextManager[aiohttp.ClientSession]:
    return tls_session(certificate, source)


async def _post(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> int:
    async with session.post(url, data=json.dumps(body), headers={"Content-Type": "text/plain"}) as response:
        await response.read()
        return response.status


async def test_workers_share_replay_and_rate_limits_through_redis_behind_nginx(
    redis_server: RedisProcess, certificate: Certificate,  # noqa: F811
) -> None:
    require("nginx", "nginx-light")
    settings = environment_file(redis_server.url)
    # The file's own key and password are in force: requests are signed with them.
    def sign(text: str) -> dict[str, Any]:
        return signed(text, secret=settings["GPROCHAT_SECRET_KEY"], password=settings["GPROCHAT_PASSWORD"])

    flags = (*unit_serve_flags(), "--backend", "echo", "--rate-limit", "3/minute")
    with served(*flags, env=clean_env(**settings), timeout=60) as base_url:
        proxy = Nginx(SimpleNamespace(base_url=base_url, port=urlsplit(base_url).port), certificate)
        try:
            url = proxy.site_url + "/api/generate"
            async with _session_from("127.0.0.2", certificate) as alice:
                async with alice.get(proxy.site_url + "/healthz") as response:
                    state = (await response.json())["state"]
                body = sign("once")
                alice_statuses = [
                    await _post(alice, url, body),
                    await _post(alice, url, body),  # a replay: refused, whichever worker has it
                    await _post(alice, url, sign("two")),
                    await _post(alice, url, sign("three")),  # her fourth in a minute
                ]
            async with _session_from("127.0.0.3", certificate) as bob:
                bob_status = await _post(bob, url, sign("mine"))
        finally:
            proxy.stop()
    assert state == "redis"
    assert alice_statuses == [200, 409, 200, 429]
    assert bob_status == 200
