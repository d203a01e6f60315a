"""``python -m gprochat``: the ``gprochat`` command."""

from .cli import main

main(prog_name="gprochat")
