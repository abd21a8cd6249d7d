"""What custom states get from the engine: setup, persisted JSON state, checkpointed objects, no-data machines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from statetrain import Trainer, TrainingArguments
from statetrain.context.run import Run
from statetrain.engine.default_machine import default_machine
from statetrain.engine.machine import MachineSpec, Transition
from statetrain.states import DoneState, InitState
from statetrain.states.base import State
from statetrain.trainer.checkpoints import ResumeError
from tests.helpers import TinyRegressor, regression_rows


class Tally:
    """A tensor-holding object with the state_dict protocol."""

    def __init__(self) -> None:
        self.total = torch.zeros(3)

    def state_dict(self) -> dict[str, Any]:
        return {"total": self.total.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.total = state["total"].clone()


class CountingOptimizeHook(State):
    """After each optimizer step: add to a tensor tally (checkpointed) and count steps in JSON state."""

    name = "tally"

    def __init__(self, key: str = "tally") -> None:
        self.key = key

    def setup(self, run: Run) -> None:
        run.register_checkpointable(self.key, Tally())

    def run(self, run: Run) -> None:
        run.checkpointables[self.key].total += torch.arange(3.0)
        memo = run.custom_state(self.name)
        memo["steps_seen"] = memo.get("steps_seen", 0) + 1


def tally_machine(key: str = "tally") -> MachineSpec:
    base = default_machine()
    moved = [t for t in base.transitions_from("optimize")]
    spec = base
    for t in moved:
        spec = spec.without_transition("optimize", t.trigger)
    spec = spec.with_state(CountingOptimizeHook(key), [Transition("optimize", "tally", "tally")])
    return spec.with_transitions([Transition("tally", t.trigger, t.dest, t.guards) for t in moved])


def make(output_dir: Path, machine: MachineSpec, max_steps: int = 6, save_strategy: str = "steps") -> Trainer:
    torch.manual_seed(0)
    args = TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=4,
        max_steps=max_steps,
        save_strategy=save_strategy,
        save_steps=3,
        report_to=[],
        disable_tqdm=True,
        use_cpu=True,
    )
    return Trainer(model=TinyRegressor(), args=args, train_dataset=regression_rows(32), machine=machine)


def test_checkpointables_and_custom_state_are_saved_and_restored(tmp_path: Path) -> None:
    full = make(tmp_path / "full", tally_machine())
    full.train()
    assert torch.equal(full.run_context.checkpointables["tally"].total, 6 * torch.arange(3.0))
    assert full.run_context.engine.custom["tally"] == {"steps_seen": 6}
    resumed = make(tmp_path / "resumed", tally_machine())
    resumed.train(resume_from_checkpoint=str(tmp_path / "full" / "checkpoint-3"))
    assert torch.equal(resumed.run_context.checkpointables["tally"].total, 6 * torch.arange(3.0))
    assert resumed.run_context.engine.custom["tally"] == {"steps_seen": 6}


def test_resume_names_a_registered_object_the_checkpoint_lacks(tmp_path: Path) -> None:
    make(tmp_path / "full", tally_machine("tally")).train()
    other = make(tmp_path / "other", tally_machine("ledger"))
    with pytest.raises(ResumeError, match="checkpointable 'ledger'"):
        other.train(resume_from_checkpoint=str(tmp_path / "full" / "checkpoint-3"))


@pytest.mark.parametrize(
    ("name", "obj", "error", "match"),
    [
        ("not a name", Tally(), ValueError, "identifier"),
        ("plain", object(), TypeError, "state_dict"),
    ],
)
def test_register_checkpointable_rejects_bad_input(name: str, obj: Any, error: type, match: str) -> None:
    trainer = make(Path("unused"), default_machine())
    from statetrain.context.run import TrainingPlan
    from statetrain.context.state import EngineState, TrainerState

    plan = TrainingPlan(1, 1, 1, 1, 1, 1.0, 1, 1)
    run = Run(trainer, plan, TrainerState(), EngineState())
    with pytest.raises(error, match=match):
        run.register_checkpointable(name, obj)
    run.register_checkpointable("once", Tally())
    with pytest.raises(ValueError, match="already registered"):
        run.register_checkpointable("once", Tally())


class Ping(State):
    name = "ping"

    def run(self, run: Run) -> None:
        run.custom_state(self.name)["pinged"] = True


def test_a_machine_that_reads_no_training_data_needs_no_train_dataset(tmp_path: Path) -> None:
    spec = MachineSpec(
        [InitState(), Ping(), DoneState()],
        [Transition("init", "go", "ping"), Transition("ping", "finish", "done")],
    )
    trainer = make(tmp_path, spec, save_strategy="no")
    trainer.train_dataset = None
    output = trainer.train()
    assert output.global_step == 0
    assert trainer.run_context.engine.custom["ping"] == {"pinged": True}
    assert trainer.plan is not None and trainer.plan.num_train_epochs == 0


def test_the_default_machine_without_a_train_dataset_names_the_states_that_need_it(tmp_path: Path) -> None:
    trainer = make(tmp_path, default_machine())
    trainer.train_dataset = None
    with pytest.raises(ValueError, match=r"requires a train_dataset.*'epoch', 'step'"):
        trainer.train()


class SwapDatasetAttribute(State):
    """Points the Trainer at another dataset (of another length) mid-run, as a data-switching state might."""

    name = "swap"

    def run(self, run: Run) -> None:
        run.trainer.train_dataset = regression_rows(50, seed=9)


def test_a_dataset_a_state_switched_to_is_not_a_change_on_resume(tmp_path: Path) -> None:
    base = default_machine()
    spec = base.with_state(SwapDatasetAttribute(), [Transition("swap", "go", "step")]).without_transition(
        "epoch", "next_window"
    )
    spec = spec.with_transitions([Transition("epoch", "swap", "swap")])
    first = make(tmp_path / "a", spec)
    first.train()
    assert first.train_dataset is not None and len(first.train_dataset) == 50
    resumed = make(tmp_path / "b", spec)  # starts, as the first run did, on its 32 rows
    resumed.train(resume_from_checkpoint=str(tmp_path / "a" / "checkpoint-3"))
    assert resumed.state.global_step == 6
