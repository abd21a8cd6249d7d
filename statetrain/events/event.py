"""The vocabulary of a training run: every event the engine can fire.

The first sixteen members are the Hugging Face callback events, under their HF names and with their
HF meaning, so an HF callback object needs no change. The rest are engine events that the state
machine makes natural: state enter/exit, and the points around forward, loss and backward where a
subscriber may see and replace the batch, the outputs or the loss.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from statetrain.events.filters import FilteredEvent


class Event(str, Enum):
    """An event of the training run; the value is the HF handler name (``on_step_end``)."""

    # --- the 16 Hugging Face callback events ---------------------------------------------------
    ON_INIT_END = "on_init_end"
    """End of ``Trainer.__init__``."""
    ON_TRAIN_BEGIN = "on_train_begin"
    """Start of ``train()``, after optimizer, scheduler and prepare; clears ``should_training_stop``."""
    ON_TRAIN_END = "on_train_end"
    """Last event of ``train()``."""
    ON_EPOCH_BEGIN = "on_epoch_begin"
    """Start of every epoch; clears ``should_epoch_stop``."""
    ON_EPOCH_END = "on_epoch_end"
    """After the epoch's last window, or after a stop flag broke the epoch."""
    ON_STEP_BEGIN = "on_step_begin"
    """Before the first micro-batch of an accumulation window; clears log/evaluate/save flags."""
    ON_SUBSTEP_END = "on_substep_end"
    """After every micro-batch of a window except the last."""
    ON_PRE_OPTIMIZER_STEP = "on_pre_optimizer_step"
    """After clipping and grad norm, before ``optimizer.step()``."""
    ON_OPTIMIZER_STEP = "on_optimizer_step"
    """Right after ``optimizer.step()``, before the scheduler step and ``zero_grad``."""
    ON_STEP_END = "on_step_end"
    """After the optimizer update, ``global_step += 1`` and the epoch update."""
    ON_EVALUATE = "on_evaluate"
    """End of ``evaluate()``; receives ``metrics``; clears ``should_evaluate``."""
    ON_PREDICT = "on_predict"
    """End of ``predict()``; receives ``metrics``."""
    ON_SAVE = "on_save"
    """After a checkpoint is complete; clears ``should_save``."""
    ON_LOG = "on_log"
    """Every ``log()`` call; receives ``logs``; clears ``should_log``."""
    ON_PREDICTION_STEP = "on_prediction_step"
    """After each evaluation or prediction batch."""
    ON_PUSH_BEGIN = "on_push_begin"
    """Before a Hub upload."""

    # --- engine events ---------------------------------------------------------------------------
    ON_STATE_ENTER = "on_state_enter"
    """The machine entered a state (payload ``state_name``); nests around the HF events it fires."""
    ON_STATE_EXIT = "on_state_exit"
    """The machine is leaving a state (payload ``state_name``)."""
    ON_BEFORE_FORWARD = "on_before_forward"
    """Entry of ``compute_loss``: payload ``inputs``, replaceable."""
    ON_AFTER_FORWARD = "on_after_forward"
    """After the model's forward: payload ``inputs`` and ``outputs``; ``outputs`` replaceable."""
    ON_AFTER_LOSS = "on_after_loss"
    """Exit of ``compute_loss``: payload ``inputs``, ``outputs`` and ``loss``; ``loss`` replaceable."""
    ON_BEFORE_BACKWARD = "on_before_backward"
    """Just before ``backward``: payload ``loss``, replaceable (the value that gets differentiated)."""
    ON_AFTER_BACKWARD = "on_after_backward"
    """Exit of ``training_step``: payload ``inputs`` and ``loss`` (the detached step loss), replaceable."""
    ON_EXCEPTION = "on_exception"
    """A state raised: payload ``state_name`` and ``exception``; the error is re-raised afterwards."""

    def __call__(
        self,
        *,
        every: int | None = None,
        once: int | bool | None = None,
        when: Callable[[Any], bool] | None = None,
    ) -> FilteredEvent:
        """``Event.ON_STEP_END(every=10)``: this event, delivered only when the filter passes."""
        from statetrain.events.filters import FilteredEvent, make_filter

        return FilteredEvent(self, make_filter(every=every, once=once, when=when))

    @property
    def is_hf_event(self) -> bool:
        """Whether the event belongs to the Hugging Face callback protocol."""
        return self in HF_EVENTS


HF_EVENTS: tuple[Event, ...] = tuple(Event)[:16]
ENGINE_EVENTS: tuple[Event, ...] = tuple(Event)[16:]

# Flags that the HF CallbackHandler clears before dispatching an event (reference table 1.1).
FLAGS_CLEARED_BEFORE: dict[Event, tuple[str, ...]] = {
    Event.ON_TRAIN_BEGIN: ("should_training_stop",),
    Event.ON_EPOCH_BEGIN: ("should_epoch_stop",),
    Event.ON_STEP_BEGIN: ("should_log", "should_evaluate", "should_save"),
    Event.ON_LOG: ("should_log",),
    Event.ON_EVALUATE: ("should_evaluate",),
    Event.ON_SAVE: ("should_save",),
}

# Payload names a subscriber may replace, per event.
REPLACEABLE: dict[Event, frozenset[str]] = {
    Event.ON_BEFORE_FORWARD: frozenset({"inputs"}),
    Event.ON_AFTER_FORWARD: frozenset({"outputs"}),
    Event.ON_AFTER_LOSS: frozenset({"loss"}),
    Event.ON_BEFORE_BACKWARD: frozenset({"loss"}),
    Event.ON_AFTER_BACKWARD: frozenset({"loss"}),
}
