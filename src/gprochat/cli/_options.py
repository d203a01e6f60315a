"""Options in sections: ``--help`` lists them under headings, as the best CLIs do.

``@section("Title")`` above a run of ``@option(...)`` lines puts those options under
that heading (an option added in the run joins it: one line). ``SectionedCommand``
prints one block per heading, in the order they are declared; the options' defaults
read as values (``on``/``off`` for a ``--x/--no-x`` flag) and their environment
variables are shown.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click

__all__ = ["Option", "SectionedCommand", "option", "section", "size"]

F = TypeVar("F", bound=Callable[..., Any])

_SECTION = "help_section"
_OTHER = "Other options"


class Option(click.Option):
    """A ``click.Option`` that shows its environment variables and a readable default."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.envvar:
            self.show_envvar = True
        if self.is_bool_flag and self.secondary_opts and isinstance(self.default, bool):
            self.show_default = "on" if self.default else "off"

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        record = super().get_help_record(ctx)
        if record is None or not isinstance(self.show_default, str):
            return record
        names, text = record  # click shows a written default in parentheses: not ours
        return names, text.replace(f"default: ({self.show_default})", f"default: {self.show_default}")


#: ``@option(...)``: ``click.option`` with ``Option``.
option = functools.partial(click.option, cls=Option)


def section(title: str) -> Callable[[F], F]:
    """The options declared below this decorator, down to the next ``section``, go
    under ``title`` in ``--help``."""

    def mark(function: F) -> F:
        for param in getattr(function, "__click_params__", []):
            if getattr(param, _SECTION, None) is None:
                setattr(param, _SECTION, title)
        return function

    return mark


def size(n: int) -> str:
    """``1048576`` -> ``"1 MiB"``, for defaults in bytes; other numbers as they are."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return str(n)


class SectionedCommand(click.Command):
    """A command whose ``--help`` lists its options under their ``section`` headings."""

    def sections(self, ctx: click.Context) -> dict[str, list[click.Parameter]]:
        """Heading -> its parameters, in declaration order (unmarked ones last)."""
        grouped: dict[str, list[click.Parameter]] = {}
        for param in self.get_params(ctx):
            grouped.setdefault(getattr(param, _SECTION, None) or _OTHER, []).append(param)
        if _OTHER in grouped:
            grouped[_OTHER] = grouped.pop(_OTHER)
        return grouped

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        for title, params in self.sections(ctx).items():
            rows = [record for param in params if (record := param.get_help_record(ctx))]
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)
