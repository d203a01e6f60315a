"""``gprochat logs``: the conversation log, listed, searched, as text or JSON."""

from __future__ import annotations

from typing import Optional

import click

from ..log import DB_NAME, ConversationLog, Exchange, LogError, data_dir, to_json
from ._common import fail

__all__ = ["logs"]


@click.command()
@click.option("-n", "--count", default=10, show_default=True, type=click.IntRange(min=0),
              help="How many exchanges, the latest last (0: all).")
@click.option("-q", "--query", help="Only exchanges whose prompt or answer has every word of QUERY.")
@click.option("--cid", help="Only the conversation with this id.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of exchanges.")
@click.option("--path", "show_path", is_flag=True, help="Print where the log is and stop.")
def logs(count: int, query: Optional[str], cid: Optional[str], as_json: bool, show_path: bool) -> None:
    """Show recent exchanges from the conversation log.

    The log is a SQLite database in the user's data directory (GPROCHAT_HOME
    overrides); gprochat chat adds every exchange to it unless given --no-log.
    """
    if show_path:
        click.echo(data_dir() / DB_NAME)
        return
    try:
        with ConversationLog.open() as log:
            exchanges = log.recent(count or None, conversation_id=cid, query=query)
    except LogError as exc:
        fail(str(exc))
    if as_json:
        click.echo(to_json(exchanges))
        return
    if not exchanges:  # say so (on stderr), rather than print nothing
        if query or cid:
            wanted = " ".join(
                ([f"in conversation {cid!r}"] if cid else [])
                + ([f"with every word of {query!r}"] if query else [])
            )
            click.echo(f"No exchange {wanted} in the log ({log.path}).", err=True)
        else:
            click.echo(f"The log ({log.path}) is empty: gprochat chat records every exchange.", err=True)
        return
    for number, exchange in enumerate(exchanges):
        if number:
            click.echo()
        click.echo(_text(exchange))


def _text(exchange: Exchange) -> str:
    lines = [
        f"# {exchange.started}  conversation {exchange.conversation_id}  "
        f"{exchange.model}  {exchange.deployment}",
    ]
    if exchange.system:
        lines += ["", "## System", "", exchange.system]
    lines += ["", "## Prompt", "", exchange.prompt, "", "## Answer", "", exchange.answer or "(none)"]
    if exchange.incomplete:
        lines += ["", "(the answer is incomplete: it was cut or stopped)"]
    if exchange.error:
        lines += ["", f"Error: {exchange.error}"]
    return "\n".join(lines)
