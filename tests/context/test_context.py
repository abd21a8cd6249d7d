"""TrainerState / TrainerControl / EngineState: typed, exact JSON round-trip, HF-readable layout."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from statetrain.context.state import ContextFileError, EngineState, TrainerControl, TrainerState

finite_or_not = st.floats(allow_nan=True, allow_infinity=True)


def same(a: object, b: object) -> bool:
    """Equality that treats NaN as equal to NaN, recursively."""
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


@given(
    epoch=finite_or_not,
    best=st.one_of(st.none(), finite_or_not),
    flos=finite_or_not,
    losses=st.lists(finite_or_not, max_size=5),
    step=st.integers(0, 10**9),
)
def test_trainer_state_round_trips_exactly(
    epoch: float, best: float | None, flos: float, losses: list[float], step: int
) -> None:
    state = TrainerState(
        epoch=epoch,
        global_step=step,
        best_metric=best,
        total_flos=flos,
        log_history=[{"loss": v, "step": i} for i, v in enumerate(losses)],
        stateful_callbacks={"TrainerControl": TrainerControl(should_save=True).state()},
    )
    again = TrainerState.from_json_string(state.to_json_string())
    assert same(dataclasses.asdict(again), dataclasses.asdict(state))


@given(st.builds(TrainerControl, **{f.name: st.booleans() for f in dataclasses.fields(TrainerControl)}))
def test_trainer_control_round_trips(control: TrainerControl) -> None:
    assert TrainerControl.from_json_string(control.to_json_string()) == control
    assert TrainerControl.from_state(control.state()) == control


@given(tr=finite_or_not, total=finite_or_not, pos=st.integers(0, 10**6), name=st.sampled_from(["init", "step", "done"]))
def test_engine_state_round_trips(tr: float, total: float, pos: int, name: str) -> None:
    engine = EngineState(current_state=name, batches_in_epoch=pos, tr_loss=tr, total_loss_scalar=total)
    assert same(dataclasses.asdict(EngineState.from_json_string(engine.to_json_string())), dataclasses.asdict(engine))


def test_trainer_state_fields_match_hf() -> None:
    transformers = pytest.importorskip("transformers")
    hf = {f.name: f.default for f in dataclasses.fields(transformers.TrainerState)}
    ours = TrainerState()
    assert [f.name for f in dataclasses.fields(TrainerState)] == list(hf)  # a dataclass, HF's field order
    assert set(dataclasses.asdict(ours)) == set(dataclasses.asdict(transformers.TrainerState()))
    for name, default in hf.items():
        if default is not dataclasses.MISSING and default is not None:
            assert getattr(ours, name) == default, name


def test_hf_reads_our_trainer_state_json(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    state = TrainerState(epoch=1.5, global_step=7, max_steps=10, log_history=[{"loss": float("nan"), "step": 1}])
    path = tmp_path / "trainer_state.json"
    state.save_to_json(path)
    hf = transformers.TrainerState.load_from_json(str(path))
    assert hf.global_step == 7 and hf.epoch == 1.5 and math.isnan(hf.log_history[0]["loss"])
    # and the layout is HF's own: same keys, indent 2, sorted
    hf_path = tmp_path / "hf.json"
    hf.save_to_json(str(hf_path))
    assert json.loads(hf_path.read_text(), parse_constant=str) == json.loads(path.read_text(), parse_constant=str)
    assert path.read_text() == hf_path.read_text()


def test_control_reset_rules_follow_hf() -> None:
    control = TrainerControl(
        should_training_stop=True, should_epoch_stop=True, should_save=True, should_evaluate=True, should_log=True
    )
    control._new_step()
    assert (control.should_save, control.should_evaluate, control.should_log) == (False, False, False)
    assert control.should_epoch_stop and control.should_training_stop
    control._new_epoch()
    assert not control.should_epoch_stop and control.should_training_stop
    control._new_training()
    assert not control.should_training_stop


def test_bad_context_file_names_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "trainer_state.json"
    path.write_text(json.dumps({"global_step": "many"}))
    with pytest.raises(ContextFileError, match=r"trainer_state.json.*global_step"):
        TrainerState.load_from_json(path)
    path.write_text(json.dumps({"global_stepp": 3}))
    with pytest.raises(ContextFileError, match="global_stepp"):
        TrainerState.load_from_json(path)
    path.write_text("{not json")
    with pytest.raises(ContextFileError, match="not valid JSON"):
        TrainerState.load_from_json(path)
