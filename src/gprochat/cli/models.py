"""``gprochat models``: the model names ``chat --model`` accepts, and what --local serves."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import click

from ..providers import GPROChat

__all__ = ["models"]


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object instead.")
@click.option("--local", is_flag=True,
              help="What the bundled server (chat --local) offers: the local model's name, or echo.")
def models(as_json: bool, local: bool) -> None:
    """List the model names chat --model accepts (the deployment picks its model:
    the protocol has no model field, so these only name what to expect).

    With --local, the model chat --local (and gprochat serve) would run, without loading it.
    """
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
    names, aliases = GPROChat.get_models(), dict(GPROChat.model_aliases)
    if as_json:
        click.echo(json.dumps({"default": GPROChat.default_model, "models": names, "aliases": aliases}))
        return
    for name in names:
        click.echo(name + ("  (default)" if name == GPROChat.default_model else ""))
    for alias, name in aliases.items():
        click.echo(f"{alias}  (alias of {name})")


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
