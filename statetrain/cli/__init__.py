"""``statetrain`` command line: one module per command; :func:`main` dispatches to them."""

from statetrain.cli.main import main

__all__ = ["main"]
