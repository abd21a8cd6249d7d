"""The central callback bus: who hears which event, in what order.

Two kinds of subscriber share one ordering:

* HF-style callback objects: any object with ``on_<event>(args, state, control, **kwargs)``
  handlers, looked up on the instance as HF's ``CallbackHandler`` does (so a handler assigned
  on the instance, or served by ``__getattr__`` as a mock or proxy serves it, is called). The
  no-op defaults of ``TrainerCallback`` are skipped, so an event costs nothing for callbacks
  that ignore it; ``refresh()`` re-reads handlers assigned after registration.
* plain functions bound to one event with ``every=``, ``once=``, ``when=`` and ``priority``.
  They receive one :class:`EventData` whose payload attributes they may read and, where the
  event allows, replace.

Order: higher ``priority`` first; equal priorities in registration order. The dispatch table is
rebuilt on every (un)registration, never on a fire. The bus knows nothing of torch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from statetrain.events.event import FLAGS_CLEARED_BEFORE, HF_EVENTS, REPLACEABLE, Event
from statetrain.events.filters import EventFilter, FilteredEvent, make_filter
from statetrain.events.hf_loggers import CALLBACKS, hf_facing_logger

NOOP_MARKER = "__statetrain_noop__"
IGNORES_REFS_MARKER = "__statetrain_ignores_refs__"
"""Set on a built-in callback method that reads none of the references HF passes as keyword
arguments (model, optimizer, ...): the bus calls it without building them (a subclass that
overrides the method gets them again)."""
logger = logging.getLogger(__name__)


class HandlerError(RuntimeError):
    """A subscriber raised; the message names the handler and the event."""

    def __init__(self, handler: str, event: Event, cause: BaseException) -> None:
        self.handler = handler
        self.event = event
        super().__init__(f"callback handler {handler} raised {type(cause).__name__} on event {event.value}: {cause}")


class EventData:
    """What a function subscriber receives: the HF trio, the references and the payload.

    Payload entries read as attributes (``data.loss``); the ones the event lets subscribers
    replace can be assigned (``data.loss = data.loss * 2``). ``control`` may be replaced too.
    """

    __slots__ = ("args", "control", "event", "payload", "refs", "state")

    def __init__(
        self,
        event: Event,
        args: Any,
        state: Any,
        control: Any,
        refs: Mapping[str, Any],
        payload: dict[str, Any],
    ) -> None:
        object.__setattr__(self, "event", event)
        object.__setattr__(self, "args", args)
        object.__setattr__(self, "state", state)
        object.__setattr__(self, "control", control)
        object.__setattr__(self, "refs", refs)
        object.__setattr__(self, "payload", payload)

    def __getattr__(self, name: str) -> Any:
        payload = object.__getattribute__(self, "payload")
        if name in payload:
            return payload[name]
        refs = object.__getattribute__(self, "refs")
        if name in refs:
            return refs[name]
        event = object.__getattribute__(self, "event")
        raise AttributeError(f"event {event.value} carries no {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "control":
            object.__setattr__(self, name, value)
            return
        event = object.__getattribute__(self, "event")
        if name not in REPLACEABLE.get(event, ()):
            allowed = sorted(REPLACEABLE.get(event, ()))
            raise AttributeError(
                f"{name!r} cannot be replaced on event {event.value}; replaceable: {allowed or 'none'}"
            )
        self.payload[name] = value


@dataclass(eq=False)
class Handler:
    """One registered subscriber for one event; a removable handle."""

    event: Event
    fn: Callable[..., Any]
    owner: Any
    is_object: bool
    priority: int
    seq: int
    filter: EventFilter | None = None
    name: str = ""
    count: int = field(default=0, repr=False)
    needs_refs: bool = True
    """Whether an object handler is given HF's references (``model=...``, ``optimizer=...``)."""


def _is_noop(method: Any) -> bool:
    """A default no-op handler: ours (marked) or transformers' ``TrainerCallback`` base."""
    if getattr(method, NOOP_MARKER, False):
        return True
    qualname = getattr(method, "__qualname__", "")
    module = getattr(method, "__module__", "")
    return qualname.startswith("TrainerCallback.") and module == "transformers.trainer_callback"


class EventBus:
    """Registers subscribers and fires events through precomputed dispatch tables."""

    def __init__(self) -> None:
        self._objects: list[tuple[Any, int, int]] = []  # (callback, priority, seq)
        self._functions: list[Handler] = []
        self._table: dict[Event, tuple[Handler, ...]] = {}
        self.active: frozenset[Event] = frozenset(FLAGS_CLEARED_BEFORE)
        """Events a fire does anything for (a handler, or HF flags to clear); others may be skipped whole."""
        self._seq = 0
        self.refs: Mapping[str, Any] = {}
        """What HF's ``CallbackHandler`` passes every callback (model, optimizer, ...): the Trainer's
        references, used when code calls an event method (``bus.on_log(args, state, control, logs=...)``)."""

    # --- registration -------------------------------------------------------------------------
    def add_callback(self, callback: Any, priority: int = 0) -> Any:
        """Register an HF-style callback object (or class, instantiated with no arguments)."""
        instance = callback() if isinstance(callback, type) else callback
        if any(type(existing) is type(instance) for existing in self.callbacks):
            listed = "\n".join(type(existing).__name__ for existing in self.callbacks)
            # formatted here, as HF does: HF's tests read the message from the logger call itself
            hf_facing_logger(logger, CALLBACKS).warning(
                f"You are adding a {type(instance).__name__} to the callbacks, but there is already one. "
                f"The current list of callbacks is:\n{listed}"
            )
        self._objects.append((instance, priority, self._next_seq()))
        self._rebuild()
        return instance

    def replace_callback(self, old: Any, new: Any) -> None:
        """Put ``new`` where ``old`` is registered (same priority and place in the order)."""
        for index, (instance, priority, seq) in enumerate(self._objects):
            if instance is old:
                self._objects[index] = (new, priority, seq)
                self._rebuild()
                return
        raise ValueError(f"replace_callback: {type(old).__name__} instance is not registered")

    def refresh(self) -> None:
        """Re-read the callbacks' handlers (one assigned on an instance after registration)."""
        self._rebuild()

    def pop_callback(self, callback: Any) -> Any | None:
        """Remove and return the first callback equal to ``callback`` or of that class."""
        for index, (instance, _, _) in enumerate(self._objects):
            if _matches(instance, callback):
                del self._objects[index]
                self._rebuild()
                return instance
        return None

    def remove_callback(self, callback: Any) -> None:
        """Remove the first callback equal to ``callback`` or of that class."""
        self.pop_callback(callback)

    @property
    def callbacks(self) -> list[Any]:
        """The registered callback objects, in dispatch order for equal priorities."""
        return [instance for instance, _, _ in self._objects]

    def on(
        self,
        event: Event | FilteredEvent,
        fn: Callable[[EventData], Any] | None = None,
        *,
        every: int | None = None,
        once: int | bool | None = None,
        when: Callable[[Any], bool] | None = None,
        priority: int = 0,
    ) -> Any:
        """Bind a function to one event; usable as a decorator. Returns the handle."""
        if isinstance(event, FilteredEvent):
            base_filter, event = event.filter, event.event
        else:
            base_filter = None
        if not isinstance(event, Event):
            raise TypeError(f"on() needs an Event, got {event!r}")
        extra = make_filter(every=every, once=once, when=when)
        filters = [f for f in (base_filter, extra) if f is not None]
        combined = filters[0] if len(filters) == 1 else (_Both(filters[0], filters[1]) if filters else None)

        def register(func: Callable[[EventData], Any]) -> Handler:
            if not callable(func):
                raise TypeError(f"handler for {event.value} must be callable, got {func!r}")
            handler = Handler(
                event=event,
                fn=func,
                owner=func,
                is_object=False,
                priority=priority,
                seq=self._next_seq(),
                filter=combined,
                name=getattr(func, "__qualname__", repr(func)),
            )
            self._functions.append(handler)
            self._rebuild()
            return handler

        return register if fn is None else register(fn)

    def off(self, handle: Handler) -> None:
        """Remove a function subscriber by the handle ``on`` returned."""
        self._functions = [h for h in self._functions if h is not handle]
        self._rebuild()

    # --- dispatch -----------------------------------------------------------------------------
    def wants(self, event: Event) -> bool:
        """Whether anything listens to ``event`` (lets callers skip building a payload)."""
        return event in self._table

    def handlers(self, event: Event) -> tuple[Handler, ...]:
        """The handlers ``event`` would call, in order."""
        return self._table.get(event, ())

    def fire(
        self,
        event: Event,
        args: Any,
        state: Any,
        control: Any,
        refs: Mapping[str, Any],
        payload: dict[str, Any] | None = None,
    ) -> Any:
        """Clear the HF flags for ``event``, call its handlers, and return the (new) control.

        Replaced payload values are written back into ``payload``.
        """
        cleared = FLAGS_CLEARED_BEFORE.get(event)
        if cleared is not None:
            for flag in cleared:
                if getattr(control, flag):  # reading is cheap; a pydantic assignment is not
                    setattr(control, flag, False)
        handlers = self._table.get(event)
        if handlers is None:
            return control
        if payload is None:
            payload = {}
        for handler in handlers:
            if handler.filter is not None:
                handler.count += 1
                if not handler.filter(handler.count, payload):
                    continue
            try:
                if handler.is_object:
                    if handler.needs_refs:
                        result = handler.fn(args, state, control, **refs, **payload)
                    else:
                        result = handler.fn(args, state, control, **payload)
                else:
                    data = EventData(event, args, state, control, refs, payload)
                    result = handler.fn(data)
                    control = data.control
            except HandlerError:
                raise
            except Exception as exc:
                raise HandlerError(handler.name, event, exc) from exc
            if result is not None:
                if isinstance(result, dict):
                    _replace(event, handler.name, payload, result)
                else:
                    control = result
        return control

    def call_event(self, event: str, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        """HF ``CallbackHandler.call_event``: fire the event named ``event`` and return the control."""
        return self.fire(Event(event), args, state, control, self.refs, kwargs)

    # --- internals ----------------------------------------------------------------------------
    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _rebuild(self) -> None:
        entries: list[Handler] = []
        for instance, priority, seq in self._objects:
            cls = type(instance)
            for event in Event:
                method = getattr(instance, event.value, None)  # the instance, as HF: own attributes, __getattr__
                if method is None or not callable(method) or _is_noop(method):
                    continue
                entries.append(
                    Handler(
                        event=event,
                        fn=method,
                        owner=instance,
                        is_object=True,
                        priority=priority,
                        seq=seq,
                        name=f"{cls.__name__}.{event.value}",
                        needs_refs=not getattr(method, IGNORES_REFS_MARKER, False),
                    )
                )
        entries.extend(self._functions)
        table: dict[Event, list[Handler]] = {}
        for entry in sorted(entries, key=lambda h: (-h.priority, h.seq)):
            table.setdefault(entry.event, []).append(entry)
        self._table = {event: tuple(items) for event, items in table.items()}
        self.active = frozenset(self._table) | frozenset(FLAGS_CLEARED_BEFORE)

    def describe(self) -> dict[str, list[str]]:
        """The dispatch table by event name, for debugging and docs."""
        return {event.value: [h.name for h in hs] for event, hs in self._table.items()}


@dataclass(frozen=True)
class _Both:
    first: EventFilter
    second: EventFilter

    def __call__(self, count: int, data: Any) -> bool:
        return self.first(count, data) and self.second(count, data)


def _matches(instance: Any, wanted: Any) -> bool:
    if isinstance(wanted, type):
        return isinstance(instance, wanted)
    return bool(instance == wanted)


def _replace(event: Event, handler: str, payload: dict[str, Any], result: dict[str, Any]) -> None:
    allowed = REPLACEABLE.get(event, frozenset())
    unknown = set(result) - allowed
    if unknown:
        raise HandlerError(
            handler,
            event,
            ValueError(
                f"returned replacements for {sorted(unknown)}; replaceable on this event: {sorted(allowed) or 'none'}"
            ),
        )
    payload.update(result)


def register_all(bus: EventBus, callbacks: Iterable[Any]) -> None:
    """Add several callback objects (or classes) in order."""
    for callback in callbacks:
        bus.add_callback(callback)


def _event_method(event: Event) -> Callable[..., Any]:
    def method(self: EventBus, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        return self.fire(event, args, state, control, self.refs, kwargs)

    method.__name__ = event.value
    method.__doc__ = f"HF ``CallbackHandler.{event.value}``: fire it on every subscriber, return the control."
    return method


for _event in HF_EVENTS:  # HF code calls ``trainer.callback_handler.on_log(args, state, control, logs=...)``
    setattr(EventBus, _event.value, _event_method(_event))
