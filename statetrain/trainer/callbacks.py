"""The Trainer's callback API (HF's ``add_callback``/``pop_callback``/``remove_callback``), the
function subscribers, and the stateful callbacks' round trip through checkpoints.

Restoring follows HF's ``restore_callback_states_from_checkpoint``: each ``ExportableState``
callback (and the control) is re-created from its stored ``args`` and ``attributes``, instances of
one class paired with the stored list in order, and a stored state with no matching callback is
warned about. statetrain's documented default (docs/differences.md) restores the early-stopping
counter even without that argument, so a resumed run continues its count.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from statetrain.events.bus import EventBus, Handler
from statetrain.events.event import Event
from statetrain.events.filters import FilteredEvent
from statetrain.events.hf_loggers import hf_facing_logger

if TYPE_CHECKING:
    from statetrain.context.state import TrainerControl, TrainerState

logger = logging.getLogger("statetrain.trainer")


def _is_exportable(callback: Any) -> bool:
    return callable(getattr(callback, "state", None)) and callable(getattr(type(callback), "from_state", None))


class CallbackMixin:
    """Callbacks and subscribers, mixed into the Trainer."""

    if TYPE_CHECKING:  # what the Trainer provides
        args: Any
        bus: EventBus
        state: TrainerState
        control: TrainerControl
        callback_refs: dict[str, Any]

    @property
    def callback_handler(self) -> EventBus:
        """HF code reads ``trainer.callback_handler.callbacks``; the bus is the handler here."""
        return self.bus

    def add_callback(self, callback: Any, priority: int = 0) -> None:
        """Add an HF-style callback object or class (HF ``add_callback``); a second of one class is warned about."""
        self.bus.add_callback(callback, priority=priority)

    def pop_callback(self, callback: Any) -> Any:
        """Remove and return a callback, given an instance or a class (HF ``pop_callback``)."""
        return self.bus.pop_callback(callback)

    def remove_callback(self, callback: Any) -> None:
        """Remove a callback, given an instance or a class (HF ``remove_callback``)."""
        self.bus.remove_callback(callback)

    def on(self, event: Event | FilteredEvent, fn: Callable[..., Any] | None = None, **options: Any) -> Any:
        """Subscribe a function to one event (``every=``, ``once=``, ``when=``, ``priority=``)."""
        return self.bus.on(event, fn, **options)

    def off(self, handle: Handler) -> None:
        self.bus.off(handle)

    def _fire(self, event: Event, **payload: Any) -> dict[str, Any]:
        self.control = self.bus.fire(event, self.args, self.state, self.control, self.callback_refs, payload)
        return payload

    def _snapshot_stateful_callbacks(self) -> None:
        """Rebuild ``state.stateful_callbacks`` from every ``ExportableState`` callback and the control.

        HF's layout: one dict per class, a list in registration order for a repeated class. The
        entry is rebuilt, never appended to (HF's list grows with every save).
        """
        entries: dict[str, list[dict[str, Any]]] = {}
        for callback in [*self.bus.callbacks, self.control]:
            if _is_exportable(callback):
                entries.setdefault(type(callback).__name__, []).append(callback.state())
        self.state.stateful_callbacks = {
            name: items[0] if len(items) == 1 else items for name, items in entries.items()
        }

    def _load_callback_state(self) -> None:
        """HF's private hook, which HF code and tests call: restore callback states from ``self.state``."""
        self._restore_callback_states(self.state)

    def _restore_callback_states(self, state: TrainerState) -> None:
        """Bring stored ``ExportableState`` callbacks back (see the module docstring for the rules)."""
        from statetrain.callbacks.early_stopping import EarlyStoppingCallback

        restore_all = bool(self.args.restore_callback_states_from_checkpoint)
        live = [c for c in [*self.bus.callbacks, self.control] if _is_exportable(c)]
        unmatched = sorted(name for name in state.stateful_callbacks if name not in {type(c).__name__ for c in live})
        if restore_all and unmatched:
            hf_facing_logger(logger).warning(
                "The checkpoint holds the state of callbacks this Trainer does not have; ignoring them: "
                + ", ".join(unmatched)
            )
        seen: dict[str, int] = {}
        for callback in live:
            name = type(callback).__name__
            stored = state.stateful_callbacks.get(name)
            index = seen[name] = seen.get(name, -1) + 1
            if stored is None:
                continue
            entries = stored if isinstance(stored, list) else [stored]
            if index >= len(entries):
                logger.warning("checkpoint holds no state for %s instance %d", name, index + 1)
                continue
            if restore_all:
                self._recreate_callback(callback, entries[index])
            elif isinstance(callback, EarlyStoppingCallback):  # statetrain's default: keep counting
                for key, value in entries[index].get("attributes", {}).items():
                    setattr(callback, key, value)

    def _recreate_callback(self, callback: Any, entry: dict[str, Any]) -> None:
        """A new instance from the stored ``args`` and ``attributes`` takes ``callback``'s place (HF)."""
        fresh = type(callback).from_state({"args": entry.get("args", {}), "attributes": entry.get("attributes", {})})
        if callback is self.control:
            self.control = fresh
        else:
            self.bus.replace_callback(callback, fresh)
