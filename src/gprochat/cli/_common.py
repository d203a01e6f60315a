"""What the commands share."""

from __future__ import annotations

import sys
from typing import NoReturn

import click

__all__ = ["fail"]


def fail(message: str, code: int = 1) -> NoReturn:
    """One line on stderr, then exit with ``code`` (1: failure, 2: usage)."""
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)
