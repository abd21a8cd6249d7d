"""DefaultFlowCallback sets exactly the flags HF's does, for every schedule and step."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statetrain.callbacks.flow import DefaultFlowCallback
from statetrain.context.state import TrainerControl

transformers = pytest.importorskip("transformers")

strategy = st.sampled_from(["no", "steps", "epoch"])


@settings(max_examples=300, deadline=None)
@given(
    logging=strategy,
    evaluation=strategy,
    saving=st.sampled_from(["no", "steps", "epoch", "best"]),
    logging_first_step=st.booleans(),
    eval_delay=st.floats(0, 6),
    logging_steps=st.integers(1, 6),
    eval_steps=st.integers(1, 6),
    save_steps=st.integers(0, 6),
    max_steps=st.integers(1, 20),
    global_step=st.integers(0, 25),
    epoch=st.floats(0, 5),
)
def test_flags_match_hf(
    logging: str,
    evaluation: str,
    saving: str,
    logging_first_step: bool,
    eval_delay: float,
    logging_steps: int,
    eval_steps: int,
    save_steps: int,
    max_steps: int,
    global_step: int,
    epoch: float,
) -> None:
    args = SimpleNamespace(
        logging_strategy=logging,
        eval_strategy=evaluation,
        save_strategy=saving,
        logging_first_step=logging_first_step,
        eval_delay=eval_delay,
    )
    state = SimpleNamespace(
        global_step=global_step,
        max_steps=max_steps,
        logging_steps=logging_steps,
        eval_steps=eval_steps,
        save_steps=save_steps,
        epoch=epoch,
    )
    for event in ("on_step_end", "on_epoch_end"):
        ours, theirs = TrainerControl(), transformers.TrainerControl()
        getattr(DefaultFlowCallback(), event)(args, state, ours)
        getattr(transformers.DefaultFlowCallback(), event)(args, state, theirs)
        for flag in (f.name for f in dataclasses.fields(TrainerControl)):
            assert getattr(ours, flag) == getattr(theirs, flag), (event, flag)
