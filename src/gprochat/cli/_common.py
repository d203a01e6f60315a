"""What the commands share."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import NoReturn

import click

__all__ = ["fail", "repair_text"]


def fail(message: str, code: int = 1) -> NoReturn:
    """One line on stderr, then exit with ``code`` (1: failure, 2: usage)."""
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


def repair_text(text: str, what: str, warn: Callable[[str], None]) -> str:
    """Text holding undecodable bytes (lone surrogates: a terminal or argument that is
    not UTF-8) with U+FFFD in their place, and one warning through ``warn``."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        warn(
            f"Warning: {what} is not valid UTF-8 (check the terminal's locale); "
            "bytes that are not were replaced by \N{REPLACEMENT CHARACTER}"
        )
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
