"""``gprochat models``: the model names the provider answers to."""

from __future__ import annotations

import json

import click

from ..providers import GPROChat

__all__ = ["models"]


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object instead.")
def models(as_json: bool) -> None:
    """List the model names chat --model accepts (the deployment picks its model:
    the protocol has no model field, so these only name what to expect)."""
    names, aliases = GPROChat.get_models(), dict(GPROChat.model_aliases)
    if as_json:
        click.echo(json.dumps({"default": GPROChat.default_model, "models": names, "aliases": aliases}))
        return
    for name in names:
        click.echo(name + ("  (default)" if name == GPROChat.default_model else ""))
    for alias, name in aliases.items():
        click.echo(f"{alias}  (alias of {name})")
