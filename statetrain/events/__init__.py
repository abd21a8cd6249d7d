"""The bus and its vocabulary: the ``Event`` enum (HF's callback events plus the engine's finer ones),
the ``EventBus`` with precomputed dispatch, and the filters (``every=``, ``once=``, ``when=``).

The bottom layer: it imports nothing from statetrain and knows nothing of torch.
"""

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
