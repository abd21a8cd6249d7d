"""``statetrain`` command line: one module per command; :func:`main` dispatches to them.

The top layer: may import every layer below it; nothing in statetrain imports it.
"""

from statetrain.cli.main import main

__all__ = ["main"]
