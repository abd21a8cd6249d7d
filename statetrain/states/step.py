"""step: fetch the next accumulation window whole, and announce ``on_step_begin``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from statetrain.checkpoint.rng import restore_rng_state
from statetrain.events.event import Event
from statetrain.states.base import State

if TYPE_CHECKING:
    from statetrain.context.run import Run


_EXHAUSTED = object()


class StepState(State):
    """Windows never span epochs: the last one of an epoch holds the remainder of micro-batches."""

    name = "step"
    needs_train_data = True
    reads = ("update_step", "epoch_iterator", "plan")
    writes = ("window", "window_pos", "num_items_in_batch")
    fires = (Event.ON_STEP_BEGIN,)
    _default_fetch = False  # set per train() by setup: fetch_window is StepState's own

    def setup(self, run: Run) -> None:
        # decided once per train(): a fetch_window overridden on the class or the instance serves every window
        self._default_fetch = getattr(self.fetch_window, "__func__", None) is StepState.fetch_window

    def fetch_window(self, run: Run, size: int) -> tuple[list[Any], Any]:
        """Up to ``size`` micro-batches and their item count; a subclass may draw them from elsewhere."""
        return run.trainer.get_batch_samples(run.epoch_iterator, size, run.device)

    def run(self, run: Run) -> None:
        plan = run.plan
        accumulation = plan.gradient_accumulation_steps
        size = accumulation
        if run.update_step == plan.num_update_steps_per_epoch - 1:
            size = plan.steps_in_epoch % accumulation or accumulation
        trainer = run.trainer
        if size == 1 and run.single_batch_windows_plain and self._default_fetch:
            # what the default fetch returns for a one-batch window that has no item count or weights
            batch = next(run.epoch_iterator, _EXHAUSTED)
            run.window, run.num_items_in_batch = ([] if batch is _EXHAUSTED else [batch]), None
            trainer._window_weights = None
        else:
            run.window, run.num_items_in_batch = self.fetch_window(run, size)
        run.window_pos = 0
        if run.pending_rng is not None:
            # mid-epoch resume: the skipped iterator is built; now the RNG continues where it stopped
            restore_rng_state(run.pending_rng)
            run.pending_rng = None
        trainer.current_gradient_accumulation_steps = len(run.window)
        if not run.window:
            return
        run.fire(Event.ON_STEP_BEGIN)  # with no listener the bus only clears HF's step-begin flags
