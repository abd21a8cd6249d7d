"""A resume with an accepted geometry change trains the budget it was asked for: an explicit
``max_steps`` is reached, and without one the epochs' worth of samples is trained (property test)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import StopAfter
from tests.resume.test_resume_allow_changed import Steps, build

CHANGES = ["per_device_train_batch_size", "gradient_accumulation_steps", "dataset_length"]


def params(trainer: Any) -> list[torch.Tensor]:
    return [p.detach().clone() for p in trainer.model.parameters()]


@pytest.mark.parametrize(("old", "new"), [((8, 1), (4, 1)), ((4, 2), (4, 1)), ((4, 1), (8, 2))])
@pytest.mark.parametrize("max_steps", [8, 20])
def test_an_explicit_max_steps_is_reached_after_a_geometry_change(
    tmp_path: Path, old: tuple[int, int], new: tuple[int, int], max_steps: int
) -> None:
    first = build(
        tmp_path / "run",
        callbacks=[StopAfter(3)],
        per_device_train_batch_size=old[0],
        gradient_accumulation_steps=old[1],
        max_steps=max_steps,
    )
    first.train()
    before = params(first)
    steps = Steps()
    resumed = build(
        tmp_path / "run",
        None,
        [steps],
        per_device_train_batch_size=new[0],
        gradient_accumulation_steps=new[1],
        max_steps=max_steps,
        resume_allow_changed=CHANGES,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        resumed.train(resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-3"))
    assert resumed.state.global_step == max_steps
    assert steps.steps == list(range(4, max_steps + 1))
    assert any(not torch.equal(a, b) for a, b in zip(before, params(resumed), strict=True))


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.integers(16, 40),
    old=st.tuples(st.sampled_from([2, 4, 8]), st.sampled_from([1, 2])),
    new=st.tuples(st.sampled_from([2, 4, 8]), st.sampled_from([1, 2, 3])),
    stop=st.integers(1, 3),
    epochs=st.integers(1, 2),
    max_steps=st.one_of(st.none(), st.integers(4, 12)),
)
@pytest.mark.slow
def test_a_changed_geometry_trains_the_requested_budget(
    tmp_path_factory: pytest.TempPathFactory,
    rows: int,
    old: tuple[int, int],
    new: tuple[int, int],
    stop: int,
    epochs: int,
    max_steps: int | None,
) -> None:
    out = tmp_path_factory.mktemp("geometry")
    from tests.resume.test_resume_allow_changed import rows as numbered_rows

    data = numbered_rows()[:rows]
    old_window = old[0] * old[1]
    stop = min(stop, max(1, rows // old_window - 1))  # a checkpoint inside the first epoch
    budget: dict[str, Any] = {"max_steps": max_steps} if max_steps else {"num_train_epochs": epochs}
    if max_steps is not None and max_steps <= stop:
        max_steps = stop + 2
        budget = {"max_steps": max_steps}
    first_seen: list[int] = []
    build(
        out,
        first_seen,
        [StopAfter(stop)],
        data=data,
        save_steps=stop,
        per_device_train_batch_size=old[0],
        gradient_accumulation_steps=old[1],
        **budget,
    ).train()
    seen: list[int] = []
    steps = Steps()
    resumed = build(
        out,
        seen,
        [steps],
        data=data,
        per_device_train_batch_size=new[0],
        gradient_accumulation_steps=new[1],
        resume_allow_changed=CHANGES,
        **budget,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        resumed.train(resume_from_checkpoint=str(out / f"checkpoint-{stop}"))
    if max_steps is not None:
        assert resumed.state.global_step == max_steps, (steps.steps, resumed.state.global_step)
        assert steps.steps == list(range(stop + 1, max_steps + 1))
        return
    consumed = stop * old_window
    position = consumed // new[0]
    position -= position % new[1]
    # samples seen: the rest of the first epoch from the last window boundary, then every later epoch
    assert len(seen) == epochs * rows - position * new[0], (len(seen), epochs, rows, position)
    trained = consumed + len(seen) - (consumed - position * new[0])  # replayed samples counted once
    assert trained == epochs * rows
