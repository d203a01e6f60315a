"""The ``gprochat`` command: ``chat`` with a deployment (or ``--local``), ``serve`` one,
``logs`` (the conversation log) and ``models``.

Answers go to stdout as they stream; errors are one line on stderr (``Error: ...``,
saying what to do) and a non-zero exit: 1 for a failure, 2 for a usage error.
"""

from __future__ import annotations

import click

from .. import __version__
from ._common import fail
from .chat import chat
from .deployments import deployments
from .logs import logs
from .models import models
from .serve import serve

__all__ = ["main", "fail"]


class _Group(click.Group):
    """Lists each command with its whole first sentence, wrapped: click cuts it to fit one line."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [
            (name, command.get_short_help_str(limit=1_000))
            for name in self.list_commands(ctx)
            if (command := self.get_command(ctx, name)) is not None and not command.hidden
        ]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gprochat")
def main() -> None:
    """Talk to GeminiProChat (GPROChat) deployments, or run one."""


main.add_command(chat)
main.add_command(serve)
main.add_command(logs)
main.add_command(models)
main.add_command(deployments)
