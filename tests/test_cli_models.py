"""``gprochat chat -m NAME`` and ``gprochat models --base-url URL`` with a router of models.

Our server (in this process, a router of two echo models, ``beta`` repeating the message
twice) or a scripted stock GeminiProChat server, and the CLI as a real process.
"""

from __future__ import annotations

import asyncio
import json
import sys

import pytest

from gprochat.server import BackgroundServer, ServerConfig
from gprochat.server.backends.echo import EchoBackend

from .conftest import ServerFactory
from .processes import clean_env, run_cli
from .routers import TWO_ECHO_MODELS
from .scripted import LAST_CHUNK, RecordedRequest, ScriptedServer, chunk, full_response, head

PASSWORD = "site-password"
ROUTER = TWO_ECHO_MODELS


@pytest.fixture
def routed(make_server: ServerFactory) -> BackgroundServer:
    return make_server(ServerConfig(router=ROUTER, passwords=(PASSWORD,)))


async def stock(request: RecordedRequest, writer: asyncio.StreamWriter) -> None:
    if request.path != "/api/generate":
        writer.write(full_response(404, b"Not Found"))
        return
    writer.write(head() + chunk(b"from the stock server") + LAST_CHUNK)


async def run_cli_async(*args: str) -> tuple[int, str, str]:
    """``gprochat ARGS`` while this test's event loop keeps serving a scripted server."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gprochat", *args, env=clean_env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def test_chat_dash_m_chooses_a_router_model_and_logs_it(routed: BackgroundServer) -> None:
    base = ("chat", "--base-url", routed.base_url, "--password", PASSWORD)
    alpha = run_cli(*base, "-m", "alpha", "Hi")
    assert (alpha.returncode, alpha.stdout) == (0, EchoBackend.PREFIX + "Hi\n"), alpha.stderr
    beta = run_cli(*base, "-m", "beta", "--json", "Hi")
    assert beta.returncode == 0, beta.stderr
    record = json.loads(beta.stdout)
    assert (record["model"], record["answer"]) == ("beta", EchoBackend.PREFIX + "HiHi")


def test_chat_dash_m_with_an_unknown_name_says_what_the_server_offers(routed: BackgroundServer) -> None:
    result = run_cli("chat", "--base-url", routed.base_url, "--password", PASSWORD, "-m", "gamma", "Hi")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("Error: Model 'gamma' is not offered by " + routed.base_url)
    assert "it offers beta, alpha; the stock names are gemini-1.5-pro, gemini-pro" in result.stderr
    locked = run_cli("chat", "--base-url", routed.base_url, "-m", "alpha", "Hi")
    assert locked.returncode == 1 and "--password or GPROCHAT_PASSWORD" in locked.stderr


def test_models_base_url_lists_what_the_server_offers_beside_the_stock_names(
    routed: BackgroundServer,
) -> None:
    result = run_cli("models", "--base-url", routed.base_url, "--password", PASSWORD)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "gemini-1.5-pro  (default)",
        "gemini-pro  (alias of gemini-1.5-pro)",
        f"beta  (offered by {routed.base_url}; its default)",
        f"alpha  (offered by {routed.base_url})",
    ]
    data = json.loads(run_cli("models", "--base-url", routed.base_url, "--password", PASSWORD,
                              "--json").stdout)
    assert data["offered"] == {"base_url": routed.base_url, "models": ["beta", "alpha"], "default": "beta"}
    assert data["models"] == ["gemini-1.5-pro"]
    locked = run_cli("models", "--base-url", routed.base_url)
    assert locked.returncode == 1 and "pass its site password with --password" in locked.stderr


def test_models_help_no_longer_says_the_protocol_has_no_model_field() -> None:
    result = run_cli("models", "--help")
    assert result.returncode == 0
    assert "no model field" not in result.stdout and "--base-url" in result.stdout


async def test_a_stock_server_offers_nothing_more_and_refuses_other_names() -> None:
    async with ScriptedServer(stock) as server:
        code, out, err = await run_cli_async("models", "--base-url", server.base_url)
        assert code == 0
        assert out.splitlines() == ["gemini-1.5-pro  (default)", "gemini-pro  (alias of gemini-1.5-pro)"]
        assert "offers no other models (it has no /api/models" in err
        code, out, err = await run_cli_async("models", "--base-url", server.base_url, "--json")
        assert json.loads(out)["offered"] is None
        code, out, err = await run_cli_async("chat", "--base-url", server.base_url, "-m", "fast", "Hi")
        assert code == 1 and "'fast' is not offered" in err and "gemini-1.5-pro, gemini-pro" in err
        assert all(r.path == "/api/models" for r in server.requests)  # the prompt never went
        code, out, err = await run_cli_async("chat", "--base-url", server.base_url, "-m", "gemini-pro", "Hi")
        assert (code, out) == (0, "from the stock server\n"), err
        assert server.requests[-1].path == "/api/generate" and "model" not in server.requests[-1].json()
