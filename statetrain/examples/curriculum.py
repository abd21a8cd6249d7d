"""A curriculum: a state before every epoch that switches the training data to that epoch's stage.

Every transition of the default machine into ``epoch`` is routed through ``curriculum`` first,
so it runs before the first epoch, between epochs, and before the epoch a resumed run continues.
Epoch ``k`` trains on ``stages[min(k, len(stages) - 1)]``. The stage in use is persisted in the
run's custom state; since the stage follows from the epoch index alone, a resume rebuilds the
right data before the epoch state skips to the checkpoint's position in it.

Stages must have the same length: the run's plan (windows per epoch, ``max_steps``) is fixed
when it starts. A switch the run made is not a change a resume refuses: the checkpoint records
the length of the dataset the run started with.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from statetrain.engine.default_machine import default_machine
from statetrain.engine.machine import MachineSpec
from statetrain.states.base import State

if TYPE_CHECKING:
    from statetrain.context.run import Run

__all__ = ["CurriculumState", "curriculum_machine"]


class CurriculumState(State):
    """Puts the stage of the epoch about to run (or to continue) in place, and records it."""

    name = "curriculum"
    reads = ("engine.epoch_index", "engine.epoch_ended")
    writes = ("trainer.train_dataset", "train_dataloader", "custom_state.curriculum")

    def __init__(self, stages: Sequence[Any]) -> None:
        if not stages:
            raise ValueError("CurriculumState needs at least one stage")
        lengths = {len(stage) for stage in stages}
        if len(lengths) != 1:
            raise ValueError(
                f"curriculum stages must have the same length (the run's plan is fixed), got lengths "
                f"{[len(stage) for stage in stages]}"
            )
        self.stages = list(stages)

    def setup(self, run: Run) -> None:
        if run.dataset_length is not None and run.dataset_length != len(self.stages[0]):
            raise ValueError(
                f"the curriculum's stages hold {len(self.stages[0])} rows but the Trainer's train_dataset "
                f"holds {run.dataset_length}; pass the first stage as train_dataset"
            )

    def stage_for(self, run: Run) -> int:
        engine = run.engine
        upcoming = engine.epoch_index + (1 if engine.epoch_ended else 0)
        return min(upcoming, len(self.stages) - 1)

    def run(self, run: Run) -> None:
        memo = run.custom_state(self.name)
        stage = self.stage_for(run)
        trainer = run.trainer
        if trainer.train_dataset is not self.stages[stage]:
            trainer.train_dataset = self.stages[stage]
            run.train_dataloader = trainer.get_train_dataloader()
            trainer.callback_refs["train_dataloader"] = run.train_dataloader
        memo["stage"] = stage


def curriculum_machine(stages: Sequence[Any]) -> MachineSpec:
    """The default machine with every way into ``epoch`` passing through ``curriculum``."""
    return default_machine().route_into("epoch", CurriculumState(stages), trigger="begin_epoch")
