"""``gprochat logs``: the conversation log, listed, searched, as text or JSON; an
attachment's bytes written out."""

from __future__ import annotations

import sys
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
@click.option("--attachment", "attachment_sha", metavar="SHA256",
              help="Write the attachment whose SHA-256 starts with SHA256 (as listed) to "
              "standard output, as bytes: gprochat logs --attachment 3f2a9c > photo.png")
def logs(
    count: int, query: Optional[str], cid: Optional[str], as_json: bool, show_path: bool,
    attachment_sha: Optional[str],
) -> None:
    """Show recent exchanges from the conversation log.

    The log is a SQLite database in the user's data directory (GPROCHAT_HOME
    overrides); gprochat chat adds every exchange to it unless given --no-log.
    Each exchange lists the images sent with its prompt (type, size, short SHA-256);
    --attachment SHA256 writes one out.
    """
    if show_path:
        click.echo(data_dir() / DB_NAME)
        return
    if attachment_sha is not None:
        _write_attachment(attachment_sha)
        return
    try:
        with ConversationLog.open(reading=True) as log:
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
    lines += ["", "## Prompt", "", exchange.prompt]
    if exchange.attachments:
        lines += ["", "## Attachments", ""]
        lines += [f"{number}. {attachment.describe()}"
                  for number, attachment in enumerate(exchange.attachments, 1)]
    lines += ["", "## Answer", "", exchange.answer or "(none)"]
    if exchange.incomplete:
        lines += ["", "(the answer is incomplete: it was cut or stopped)"]
    if exchange.error:
        lines += ["", f"Error: {exchange.error}"]
    return "\n".join(lines)


def _write_attachment(sha256: str) -> None:
    if sys.stdout.isatty():
        fail("an attachment is binary: redirect it to a file "
             f"(gprochat logs --attachment {sha256} > image)", 2)
    try:
        with ConversationLog.open(reading=True) as log:
            _, content = log.attachment(sha256)
    except LogError as exc:
        fail(str(exc))
    sys.stdout.buffer.write(content)
    sys.stdout.buffer.flush()
