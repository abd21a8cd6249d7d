"""epoch_end: close the epoch (also when a stop flag broke it), announce ``on_epoch_end``."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from statetrain.distributed.processes import agree_on_preemption
from statetrain.events.event import Event
from statetrain.states.base import State

if TYPE_CHECKING:
    from statetrain.context.run import Run

logger = logging.getLogger(__name__)


class EpochEndState(State):
    """An epoch that yielded no micro-batch at all stops training, as in HF."""

    name = "epoch_end"
    reads = ("epoch_had_batches",)
    writes = ("engine.epoch_ended", "control.should_training_stop", "preemption.agreed")
    fires = (Event.ON_EPOCH_END,)

    def run(self, run: Run) -> None:
        agree_on_preemption(run)  # a signal since the last step reaches every process's guard alike
        if not run.epoch_had_batches:
            logger.warning(
                "epoch %d yielded no batch; stopping training at step %d (expected when an "
                "IterableDataset holds fewer samples than max_steps needs)",
                run.engine.epoch_index,
                run.state.global_step,
            )
            run.control.should_training_stop = True
        run.fire(Event.ON_EPOCH_END)
        run.engine.epoch_ended = True
