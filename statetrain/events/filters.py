"""Event filters: deliver an event to a handler only on some of its occurrences.

A filter sees the 1-based count of the event's occurrences since the handler was registered, and
the fired payload. ``every=n`` passes occurrences n, 2n, 3n...; ``once=n`` passes only occurrence n
(``once=True`` is the first); ``when=predicate`` passes when the predicate of the payload is true.
Several given together must all pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from statetrain.events.event import Event


class EventFilter(Protocol):
    """Decides from the occurrence count and the payload whether a handler runs."""

    def __call__(self, count: int, data: Any) -> bool: ...


@dataclass(frozen=True)
class Every:
    """Pass every ``n``-th occurrence."""

    n: int

    def __call__(self, count: int, data: Any) -> bool:
        return count % self.n == 0


@dataclass(frozen=True)
class Once:
    """Pass only the ``n``-th occurrence."""

    n: int

    def __call__(self, count: int, data: Any) -> bool:
        return count == self.n


@dataclass(frozen=True)
class When:
    """Pass when ``predicate(payload)`` is true."""

    predicate: Callable[[Any], bool]

    def __call__(self, count: int, data: Any) -> bool:
        return bool(self.predicate(data))


@dataclass(frozen=True)
class AllOf:
    """Pass when every part passes."""

    parts: tuple[EventFilter, ...]

    def __call__(self, count: int, data: Any) -> bool:
        return all(part(count, data) for part in self.parts)


def make_filter(
    *,
    every: int | None = None,
    once: int | bool | None = None,
    when: Callable[[Any], bool] | None = None,
) -> EventFilter | None:
    """Build one filter from the keyword forms; ``None`` when nothing filters."""
    parts: list[EventFilter] = []
    if every is not None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every= must be a positive integer, got {every!r}")
        parts.append(Every(every))
    if once is not None and once is not False:
        n = 1 if once is True else once
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"once= must be True or a positive integer, got {once!r}")
        parts.append(Once(n))
    if when is not None:
        if not callable(when):
            raise ValueError(f"when= must be callable, got {when!r}")
        parts.append(When(when))
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else AllOf(tuple(parts))


@dataclass(frozen=True)
class FilteredEvent:
    """An event together with a filter, as made by ``Event.ON_STEP_END(every=2)``."""

    event: Event
    filter: EventFilter | None
