"""``gprochat models``: the model names ``chat --model`` accepts, what a gprochat server
offers (``--base-url``), and what --local serves."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any, Optional

import click

from ..errors import AuthenticationError, GPROChatError
from ..providers import GPROChat
from ..providers._deployments import Deployment
from ..providers._models import offered_models
from ..providers._session import pool
from ..providers._timeouts import resolve_timeout
from ._common import fail

__all__ = ["models"]


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object instead.")
@click.option("--local", is_flag=True,
              help="What the bundled server (chat --local) offers: the local model's name, or echo.")
@click.option("--base-url", metavar="URL",
              help="Also list what this deployment offers (a gprochat server's GET /api/models).")
@click.option("--password", envvar="GPROCHAT_PASSWORD", metavar="PW",
              help="The deployment's site password, if it has one [env: GPROCHAT_PASSWORD].")
@click.option("--timeout", type=float, default=10.0, show_default=True,
              help="Seconds to wait for the deployment's answer.")
def models(as_json: bool, local: bool, base_url: Optional[str], password: Optional[str],
           timeout: float) -> None:
    """List the model names chat --model accepts.

    The stock names (gemini-1.5-pro, its alias) go as GeminiProChat's clients send
    them: the deployment answers with its one model. A gprochat server may offer
    several (a router of models): --base-url URL lists them, and chat -m NAME
    sends the name with the request.

    With --local, the model chat --local (and gprochat serve) would run, without loading it.
    """
    if local and base_url:
        fail("--local and --base-url list different servers: give one of them", 2)
    if local:
        name, why_not = _local_model()
        if as_json:
            click.echo(json.dumps({"local": {"backend": "local" if why_not is None else "echo",
                                             "models": [name], "why_not_local": why_not}}))
            return
        click.echo(f"{name}  (chat --local; -m {name} or no -m)")
        if why_not is not None:
            click.echo(f"No local model, so the echo backend answers: {why_not}", err=True)
        return
    offered = _offered(base_url, password, timeout) if base_url else None
    names, aliases = GPROChat.get_models(), dict(GPROChat.model_aliases)
    if as_json:
        listing: dict[str, Any] = {"default": GPROChat.default_model, "models": names,
                                   "aliases": aliases}
        if base_url:
            listing["offered"] = offered  # null: a stock server (no /api/models)
        click.echo(json.dumps(listing))
        return
    for name in names:
        click.echo(name + ("  (default)" if name == GPROChat.default_model else ""))
    for alias, name in aliases.items():
        click.echo(f"{alias}  (alias of {name})")
    if offered is not None:
        for index, name in enumerate(offered["models"]):
            if name not in names and name not in aliases:
                mark = "; its default" if index == 0 else ""
                click.echo(f"{name}  (offered by {offered['base_url']}{mark})")
    elif base_url:
        click.echo(f"{_display(base_url)} offers no other models (it has no /api/models: a stock "
                   "GeminiProChat server answers with its one model)", err=True)


def _display(base_url: str) -> str:
    try:
        return Deployment(base_url).display
    except GPROChatError as exc:
        fail(str(exc).replace("base_url=", "--base-url "), 2)


def _offered(base_url: str, password: Optional[str], seconds: float) -> Optional[dict[str, Any]]:
    """``{"base_url", "models", "default"}`` from the deployment; ``None`` for a stock one."""
    where = _display(base_url)

    async def ask() -> Optional[tuple[str, ...]]:
        return await offered_models(
            await pool.session(None), base_url.rstrip("/"), password=password, proxy=None,
            timeout=resolve_timeout(seconds), user_agent="gprochat-cli",
        )

    try:
        found = asyncio.run(ask())
    except AuthenticationError as exc:
        said = exc.server_message or str(exc)
        fail(f"{where} refused to list its models ({said}): pass its site password with "
             "--password or GPROCHAT_PASSWORD")
    except GPROChatError as exc:
        fail(str(exc))
    if found is None:
        return None
    return {"base_url": where, "models": list(found), "default": found[0] if found else None}


def _local_model() -> tuple[str, Optional[str]]:
    """The bundled server's model name (as its backend names it) and why it is echo, if so."""
    from ..server.backends import resolve_backend
    from ..server.backends._gguf import MODEL_PATH_ENV_VAR, default_model_path

    backend = os.environ.get("GPROCHAT_BACKEND", "auto").strip().lower() or "auto"
    if backend == "echo":
        return "echo", "GPROCHAT_BACKEND=echo"
    path = os.environ.get(MODEL_PATH_ENV_VAR, "").strip() or None
    chosen, _options, why_not = resolve_backend("local" if backend == "local" else "auto",
                                                {"model_path": path} if path else {})
    if chosen != "local":
        return "echo", why_not
    found = path or default_model_path()
    return (Path(found).name.removesuffix(".gguf") if found else "local"), None
