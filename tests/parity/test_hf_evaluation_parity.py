"""evaluate() and predict() equal the real transformers.Trainer's, including padded outputs."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
import torch

from statetrain import Trainer, TrainingArguments
from tests.helpers import TokenModel, token_rows
from tests.parity.test_hf_training_parity import Recorder

transformers = pytest.importorskip("transformers")


def variable_rows(n: int, seed: int) -> list[dict[str, Any]]:
    g = torch.Generator().manual_seed(seed)
    rows = []
    for row in token_rows(n, length=12, seed=seed):
        length = int(torch.randint(3, 13, (1,), generator=g))
        rows.append({"input_ids": row["input_ids"][:length], "labels": row["labels"][:length]})
    return rows


def pad_collator(features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    longest = max(len(f["input_ids"]) for f in features)
    ids = torch.zeros(len(features), longest, dtype=torch.long)
    labels = torch.full((len(features), longest), -100, dtype=torch.long)
    for i, f in enumerate(features):
        ids[i, : len(f["input_ids"])] = f["input_ids"]
        labels[i, : len(f["labels"])] = f["labels"]
    return {"input_ids": ids, "labels": labels}


def accuracy(pred: Any) -> dict[str, float]:
    predictions, labels = pred
    predictions = predictions.argmax(-1) if predictions.ndim == 3 else predictions
    mask = labels != -100
    return {"accuracy": float((predictions[mask] == labels[mask]).mean()), "count": int(mask.sum())}


OPTIONS: dict[str, Any] = dict(
    per_device_eval_batch_size=3,
    per_device_train_batch_size=4,
    save_strategy="no",
    report_to="none",
    use_cpu=True,
    seed=5,
    disable_tqdm=True,
    learning_rate=1e-2,
    optim="adamw_torch",
)


def pair(tmp_path: Any, eval_dataset: Any, callbacks: Any = None, **overrides: Any) -> tuple[Any, Trainer]:
    torch.manual_seed(0)
    model = TokenModel()
    options = {**OPTIONS, **overrides}
    common = dict(
        train_dataset=variable_rows(20, seed=9),
        eval_dataset=eval_dataset,
        data_collator=pad_collator,
        compute_metrics=options.pop("compute_metrics", accuracy),
    )
    extra_hf = options.pop("hf_extra", {})
    hf = transformers.Trainer(
        model=copy.deepcopy(model),
        args=transformers.TrainingArguments(str(tmp_path / "hf"), **options, **extra_hf),
        callbacks=[callbacks[0]] if callbacks else None,
        **common,
    )
    st = Trainer(
        model=copy.deepcopy(model),
        args=TrainingArguments(str(tmp_path / "st"), **options),
        callbacks=[callbacks[1]] if callbacks else None,
        **common,
    )
    return hf, st


def without_speed(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if not k.endswith(("_runtime", "_per_second", "_preparation_time"))}


def test_evaluate_metrics_equal_hf_with_padded_variable_lengths(tmp_path: Any) -> None:
    hf, st = pair(tmp_path, variable_rows(11, seed=3))
    a, b = hf.evaluate(), st.evaluate()
    assert set(a) == set(b)
    assert without_speed(a).keys() == without_speed(b).keys()
    for key, value in without_speed(a).items():
        assert b[key] == pytest.approx(value, abs=1e-6), key


def test_predict_arrays_equal_hf(tmp_path: Any) -> None:
    rows = variable_rows(10, seed=4)
    hf, st = pair(tmp_path, None)
    a, b = hf.predict(rows), st.predict(rows)
    assert a.predictions.shape == b.predictions.shape
    np.testing.assert_allclose(b.predictions, a.predictions, atol=1e-6)
    np.testing.assert_array_equal(b.label_ids, a.label_ids)
    assert (b.label_ids == -100).any(), "the batches must have needed padding"
    assert set(a.metrics) == set(b.metrics)
    for key, value in without_speed(a.metrics).items():
        assert b.metrics[key] == pytest.approx(value, abs=1e-6)


def test_dict_of_eval_datasets_is_evaluated_per_key(tmp_path: Any) -> None:
    sets = {"short": variable_rows(5, seed=6), "long": variable_rows(8, seed=7)}
    hf, st = pair(tmp_path, sets)
    a, b = hf.evaluate(), st.evaluate()
    assert set(a) == set(b)
    assert {"eval_short_loss", "eval_long_accuracy"} <= set(b)
    for key, value in without_speed(a).items():
        assert b[key] == pytest.approx(value, abs=1e-6), key


def test_include_for_metrics_and_preprocess_logits(tmp_path: Any) -> None:
    seen: dict[str, list[Any]] = {"hf": [], "st": []}

    def compute(name: str) -> Any:
        def fn(pred: Any) -> dict[str, float]:
            seen[name].append(pred)
            return {"inputs_sum": float(np.asarray(pred.inputs).sum()), "loss_mean": float(np.mean(pred.losses))}

        return fn

    def argmax(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return logits.argmax(-1)

    rows = variable_rows(7, seed=8)
    torch.manual_seed(0)
    model = TokenModel()
    options = {**OPTIONS, "include_for_metrics": ["inputs", "loss"]}
    hf = transformers.Trainer(
        model=copy.deepcopy(model),
        args=transformers.TrainingArguments(str(tmp_path / "h"), **options),
        data_collator=pad_collator,
        compute_metrics=compute("hf"),
        preprocess_logits_for_metrics=argmax,
    )
    st = Trainer(
        model=copy.deepcopy(model),
        args=TrainingArguments(str(tmp_path / "s"), **options),
        data_collator=pad_collator,
        compute_metrics=compute("st"),
        preprocess_logits_for_metrics=argmax,
    )
    a, b = hf.evaluate(rows), st.evaluate(rows)
    for key, value in without_speed(a).items():
        assert b[key] == pytest.approx(value, abs=1e-6), key
    np.testing.assert_array_equal(seen["st"][0].predictions, seen["hf"][0].predictions)
    assert seen["st"][0].predictions.ndim == 2  # argmax applied per batch before gathering


def test_batch_eval_metrics_calls_per_batch_with_compute_result(tmp_path: Any) -> None:
    calls: list[bool] = []

    def running(pred: Any, compute_result: bool) -> dict[str, float]:
        calls.append(compute_result)
        return {"batches": float(len(calls))}

    _, st = pair(tmp_path, variable_rows(8, seed=2), compute_metrics=running, batch_eval_metrics=True)
    metrics = st.evaluate()
    assert calls == [False, False, True]  # 8 rows in batches of 3
    assert metrics["eval_batches"] == 3.0


def test_eval_accumulation_steps_gives_the_same_result(tmp_path: Any) -> None:
    rows = variable_rows(13, seed=12)
    _, plain = pair(tmp_path, None)
    _, chunked = pair(tmp_path, None, eval_accumulation_steps=2)
    a, b = plain.predict(rows), chunked.predict(rows)
    np.testing.assert_array_equal(a.predictions, b.predictions)
    np.testing.assert_array_equal(a.label_ids, b.label_ids)


def test_training_with_step_evaluation_matches_hf_trace_and_metrics(tmp_path: Any) -> None:
    hf_rec, st_rec = Recorder(), Recorder()
    hf, st = pair(
        tmp_path,
        variable_rows(7, seed=1),
        callbacks=(hf_rec, st_rec),
        eval_strategy="steps",
        eval_steps=2,
        logging_steps=1,
        max_steps=5,
        metric_for_best_model="accuracy",
    )
    hf.train()
    st.train()
    assert hf_rec.trace == st_rec.trace
    names = [t[0] for t in st_rec.trace]
    assert names.count("on_evaluate") == 3  # steps 2, 4 and the forced last step 5
    hf_evals = [e for e in hf.state.log_history if "eval_loss" in e]
    st_evals = [e for e in st.state.log_history if "eval_loss" in e]
    assert len(hf_evals) == len(st_evals) == 3
    for x, y in zip(hf_evals, st_evals, strict=True):
        for key, value in without_speed(x).items():
            assert y[key] == pytest.approx(value, abs=1e-5), key
    assert st.state.best_metric == pytest.approx(hf.state.best_metric)
    assert st.state.best_global_step == hf.state.best_global_step


def test_eval_on_start_and_epoch_strategy_match_hf_trace(tmp_path: Any) -> None:
    hf_rec, st_rec = Recorder(), Recorder()
    hf, st = pair(
        tmp_path,
        variable_rows(6, seed=1),
        callbacks=(hf_rec, st_rec),
        eval_strategy="epoch",
        eval_on_start=True,
        num_train_epochs=2,
        logging_strategy="epoch",
    )
    hf.train()
    st.train()
    assert hf_rec.trace == st_rec.trace
    assert [t[0] for t in st_rec.trace].count("on_evaluate") == 3
