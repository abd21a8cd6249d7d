"""Events, filters and the callback bus."""

from statetrain.events.bus import EventBus, EventData, Handler, HandlerError
from statetrain.events.event import ENGINE_EVENTS, HF_EVENTS, Event
from statetrain.events.filters import FilteredEvent, make_filter

__all__ = [
    "ENGINE_EVENTS",
    "HF_EVENTS",
    "Event",
    "EventBus",
    "EventData",
    "FilteredEvent",
    "Handler",
    "HandlerError",
    "make_filter",
]
