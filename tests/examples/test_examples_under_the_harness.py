"""The property-testing kit on a custom machine: the curriculum loop under LoopHarness's kill-and-resume rules."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import run_state_machine_as_test

from statetrain.engine.machine import MachineSpec
from statetrain.examples.curriculum import CurriculumState, curriculum_machine
from statetrain.testing import LoopHarness, TrainingConfig, harness_settings, tiny_rows, training_configs
from tests.testing.test_harness import falsifying


class CurriculumHarness(LoopHarness):
    """Three stages of equal length; every interruption the harness draws must resume into the right one."""

    def config_strategy(self) -> st.SearchStrategy[TrainingConfig]:
        return training_configs(iterable=False, max_train_size=10)

    def make_machine(self) -> MachineSpec:
        assert self.config is not None
        n = self.config.train_size
        return curriculum_machine([tiny_rows(n, seed=n), tiny_rows(n, seed=n + 1), tiny_rows(n, seed=n + 2)])


def test_the_curriculum_loop_passes_the_harness() -> None:
    run_state_machine_as_test(
        CurriculumHarness,
        settings=harness_settings(max_examples=15, stateful_step_count=6, database=None, derandomize=True),
    )


class ForgetfulCurriculum(CurriculumState):
    """Planted bug: counts epochs in the state object instead of deriving the stage from the run."""

    def __init__(self, stages: Any) -> None:
        super().__init__(stages)
        self.epochs_begun = 0

    def stage_for(self, run: Any) -> int:
        stage = min(self.epochs_begun, len(self.stages) - 1)
        self.epochs_begun += 1
        return stage


class ForgetfulCurriculumHarness(CurriculumHarness):
    def make_machine(self) -> MachineSpec:
        assert self.config is not None
        n = self.config.train_size
        stages = [tiny_rows(n, seed=n), tiny_rows(n, seed=n + 1), tiny_rows(n, seed=n + 2)]
        spec = curriculum_machine(stages)
        return spec.replace_state(ForgetfulCurriculum(stages))


def test_the_harness_finds_a_curriculum_that_forgets_its_stage_on_resume() -> None:
    message, rules, _ = falsifying(ForgetfulCurriculumHarness, max_examples=60, steps=6)
    # shrunk to one cut and a resume (a new train() call): the resumed run trains on the wrong stage
    assert "differs from the uninterrupted run" in message and "resuming changed the training" in message
    assert len(rules) <= 2
