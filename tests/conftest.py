"""Shared fixtures: our server on a free loopback port, started per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Optional

import pytest

from gprochat.server import BackgroundServer, ServerConfig, create_app
from gprochat.server.backends import Backend

ServerFactory = Callable[..., BackgroundServer]


@pytest.fixture(autouse=True)
def gprochat_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Every test (and every ``gprochat`` it runs) keeps its conversation log in a temp dir."""
    home = tmp_path_factory.mktemp("gprochat-home")
    monkeypatch.setenv("GPROCHAT_HOME", str(home))
    return home


@pytest.fixture
def make_server() -> Iterator[ServerFactory]:
    """``make_server(config=None, backend=None)`` -> a started ``BackgroundServer``."""
    servers: list[BackgroundServer] = []

    def factory(
        config: Optional[ServerConfig] = None, backend: Optional[Backend] = None, **kw: Any
    ) -> BackgroundServer:
        app = create_app(config or ServerConfig(**kw), backend=backend)
        server = BackgroundServer(app=app).start()
        servers.append(server)
        return server

    yield factory
    for server in servers:
        server.stop()


@pytest.fixture
def echo_server(make_server: ServerFactory) -> BackgroundServer:
    """Our server with the default settings and the echo backend."""
    return make_server()
