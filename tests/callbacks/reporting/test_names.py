"""Names and objectives agree with transformers' own functions for any logs (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from statetrain.callbacks.reporting.names import rewrite_logs
from statetrain.trainer.hp_search import default_compute_objective

integration_utils = pytest.importorskip("transformers.integrations.integration_utils")
trainer_utils = pytest.importorskip("transformers.trainer_utils")

keys = st.one_of(
    st.sampled_from(["loss", "eval_loss", "eval_accuracy", "test_f1", "epoch", "learning_rate", "train_runtime"]),
    st.builds(lambda p, s: p + s, st.sampled_from(["", "eval_", "test_", "eval", "train_"]), st.text(max_size=8)),
)
values = st.floats(allow_nan=False, allow_infinity=False, width=32)


@given(st.dictionaries(keys, values, max_size=8))
def test_rewrite_logs_names_as_transformers_does(logs: dict[str, float]) -> None:
    assert rewrite_logs(logs) == integration_utils.rewrite_logs(logs)


metric_keys = st.one_of(
    st.sampled_from(["eval_loss", "epoch", "eval_runtime", "eval_samples_per_second", "eval_steps_per_second"]),
    st.builds(lambda s: "eval_" + s, st.text(alphabet="abcxyz_", min_size=1, max_size=6)),
)


@given(st.dictionaries(metric_keys, values, min_size=1, max_size=6).map(lambda m: {"eval_loss": 0.5, **m}))
def test_default_objective_is_transformers(metrics: dict[str, float]) -> None:
    assert default_compute_objective(metrics) == pytest.approx(trainer_utils.default_compute_objective(metrics))
