"""Turning a misspelt argument name into an error that says what was probably meant."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def closest_name(name: str, valid: Iterable[str]) -> str | None:
    """The valid name nearest to ``name``, or None when nothing is close enough to be a typo."""
    matches = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.6)
    return matches[0] if matches else None


def unknown_names_message(owner: str, unknown: Iterable[str], valid: Iterable[str]) -> str:
    """One line per unknown name, each with its closest valid spelling when there is one."""
    valid_names = sorted(valid)
    lines = []
    for name in sorted(unknown):
        guess = closest_name(name, valid_names)
        hint = f"; did you mean {guess!r}?" if guess else f"; {owner} has no such field"
        lines.append(f"{owner} got an unknown argument {name!r}{hint}")
    return "\n".join(lines)
