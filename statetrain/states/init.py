"""init: start the run's clock and sums, zero the gradients, announce ``on_train_begin``."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import torch

from statetrain.events.event import Event
from statetrain.states.base import State

if TYPE_CHECKING:
    from statetrain.context.run import Run


class InitState(State):
    """Entered once per ``train()`` call, after the optimizer, scheduler and data are prepared."""

    name = "init"
    reads = ("engine.globalstep_last_logged",)
    writes = ("start_time", "tr_loss", "engine.epoch_ended")
    fires = (Event.ON_TRAIN_BEGIN,)

    def run(self, run: Run) -> None:
        run.start_time = time.time()
        run.tr_loss = torch.tensor(run.engine.tr_loss, device=run.args.device)
        run.model.zero_grad()
        run.fire(Event.ON_TRAIN_BEGIN)
