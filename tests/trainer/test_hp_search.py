"""Trainer.hyperparameter_search on optuna: HF's signature and BestRun, pruning through the bus,
failed trials recorded, trial folders, a resumable study, refusals by name."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch

from statetrain import BestRun, Trainer, TrainingArguments
from statetrain.callbacks.reporting import read_jsonl
from statetrain.demo import DigitsClassifier, load_digits_splits
from tests.helpers import TinyRegressor, regression_rows

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _digits_trainer(output_dir: Path, **options: Any) -> Trainer:
    train_rows, test_rows = load_digits_splits()
    settings: dict[str, Any] = dict(
        output_dir=str(output_dir),
        max_steps=40,
        per_device_train_batch_size=32,
        eval_strategy="steps",
        eval_steps=10,
        logging_steps=10,
        save_strategy="no",
        report_to="jsonl",
        disable_tqdm=True,
        use_cpu=True,
        seed=0,
    )
    settings.update(options)
    return Trainer(
        model_init=lambda: DigitsClassifier(hidden=32),
        args=TrainingArguments(**settings),
        train_dataset=train_rows[:640],
        eval_dataset=test_rows,
    )


def _learning_rate(trial: Any) -> dict[str, Any]:
    return {"learning_rate": trial.suggest_float("learning_rate", 1e-5, 0.3, log=True)}


@pytest.mark.slow
def test_six_trials_on_digits_find_a_learning_rate_better_than_the_worst_and_prune_one(tmp_path: Path) -> None:
    trainer = _digits_trainer(tmp_path)
    seen: list[optuna.Study] = []
    best = trainer.hyperparameter_search(
        hp_space=_learning_rate,
        n_trials=6,
        direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=0),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
        callbacks=[lambda study, trial: seen.append(study)],
    )
    assert isinstance(best, BestRun) and set(best.hyperparameters) == {"learning_rate"}
    trials = seen[-1].get_trials(deepcopy=False)
    assert len(trials) == 6
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    assert best.objective < max(t.value for t in complete)
    assert best.run_id == str(min(complete, key=lambda t: t.value).number)
    assert pruned, "the median pruner stopped no trial"
    for trial in trials:
        history = read_jsonl(tmp_path / f"run-{trial.number}" / "log_history.jsonl")
        assert "train_runtime" in history[-1], f"trial {trial.number}'s log does not end with the run summary"
        steps = [e["step"] for e in history if "loss" in e]
        assert steps == list(range(10, steps[-1] + 1, 10))
        if trial in pruned:
            assert history[-1]["step"] < 40  # stopped early, after an evaluation
            assert history[-1]["step"] == max(trial.intermediate_values)
        else:
            assert history[-1]["step"] == 40
            assert trial.value == pytest.approx(next(e["eval_loss"] for e in reversed(history) if "eval_loss" in e))


def _tiny_trainer(output_dir: Path, model_init: Any, **options: Any) -> Trainer:
    settings: dict[str, Any] = dict(
        output_dir=str(output_dir), max_steps=4, per_device_train_batch_size=4, save_strategy="no",
        report_to="jsonl", disable_tqdm=True, use_cpu=True,
    )  # fmt: skip
    settings.update(options)
    return Trainer(
        model_init=model_init,
        args=TrainingArguments(**settings),
        train_dataset=regression_rows(32),
        eval_dataset=regression_rows(8, seed=1),
    )


class NanLoss(TinyRegressor):
    """A model whose loss is NaN: what a diverging trial produces."""

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, Any]:
        out = super().forward(x, labels)
        if labels is not None:
            out["loss"] = out["loss"] * math.nan
        return out


@pytest.mark.parametrize("policy", ["filter", "raise"])
def test_a_failed_trial_is_recorded_and_the_search_goes_on(tmp_path: Path, policy: str) -> None:
    def model_init(trial: Any) -> torch.nn.Module:
        return NanLoss() if trial is not None and trial.number == 1 else TinyRegressor()

    trainer = _tiny_trainer(tmp_path, model_init, nan_inf_policy=policy)
    storage = optuna.storages.InMemoryStorage()
    best = trainer.hyperparameter_search(hp_space=_learning_rate, n_trials=3, storage=storage, study_name="s")
    study = optuna.load_study(study_name="s", storage=storage)
    states = [t.state for t in study.trials]
    assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE]
    assert best.run_id in ("0", "2")


class OutOfMemory(TinyRegressor):
    """A model too big for the device: its forward raises what torch raises then."""

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, Any]:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")


def test_an_out_of_memory_trial_is_recorded_and_the_search_goes_on(tmp_path: Path) -> None:
    def model_init(trial: Any) -> torch.nn.Module:
        return OutOfMemory() if trial is not None and trial.number == 0 else TinyRegressor()

    storage = optuna.storages.InMemoryStorage()
    best = _tiny_trainer(tmp_path, model_init).hyperparameter_search(
        hp_space=_learning_rate, n_trials=2, storage=storage, study_name="s"
    )
    states = [t.state for t in optuna.load_study(study_name="s", storage=storage).trials]
    assert states == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE]
    assert best.run_id == "1"


def test_the_search_resumes_a_study_from_its_storage(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    trainer = _tiny_trainer(tmp_path / "out", lambda: TinyRegressor())

    def interrupt_after_two(study: optuna.Study, trial: Any) -> None:
        if len(study.trials) == 2:
            raise KeyboardInterrupt  # the search process dies after two trials

    with pytest.raises(KeyboardInterrupt):
        trainer.hyperparameter_search(
            hp_space=_learning_rate, n_trials=4, storage=storage, study_name="s", callbacks=[interrupt_after_two]
        )
    best = _tiny_trainer(tmp_path / "out", lambda: TinyRegressor()).hyperparameter_search(
        hp_space=_learning_rate, n_trials=4, storage=storage, study_name="s"
    )
    study = optuna.load_study(study_name="s", storage=storage)
    assert [t.number for t in study.trials] == [0, 1, 2, 3]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["run-0", "run-1", "run-2", "run-3"]
    assert best.objective == min(t.value for t in study.trials)


def test_hp_name_names_the_trial_folder_and_state(tmp_path: Path) -> None:
    names: list[str | None] = []

    trainer = _tiny_trainer(tmp_path, lambda: TinyRegressor())
    trainer.add_callback(type("Grab", (), {"on_train_end": lambda s, a, st, c, **k: names.append(st.trial_name)}))
    trainer.hyperparameter_search(hp_space=_learning_rate, n_trials=2, hp_name=lambda t: f"lr-{t.number}")
    assert names == ["lr-0", "lr-1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lr-0", "lr-1"]
    assert trainer.args.output_dir == str(tmp_path)


def test_several_directions_return_the_pareto_front(tmp_path: Path) -> None:
    trainer = _tiny_trainer(tmp_path, lambda: TinyRegressor())
    front = trainer.hyperparameter_search(
        hp_space=_learning_rate,
        compute_objective=lambda m: [m["eval_loss"], m["epoch"]],
        n_trials=2,
        direction=["minimize", "maximize"],
    )
    assert isinstance(front, list) and front and all(isinstance(r, BestRun) for r in front)
    assert all(len(r.objective) == 2 for r in front)  # type: ignore[arg-type]


def test_the_default_space_is_transformers() -> None:
    transformers = pytest.importorskip("transformers")
    from statetrain.trainer.hp_search import default_hp_space_optuna

    values = {"learning_rate": 3e-5, "num_train_epochs": 2, "seed": 7, "per_device_train_batch_size": 16}
    trial = optuna.trial.FixedTrial(values)
    assert default_hp_space_optuna(trial) == transformers.trainer_utils.default_hp_space_optuna(trial) == values


@pytest.mark.parametrize(("backend", "words"), [("ray", "Ray Tune"), ("wandb", "W&B sweeps")])
def test_ray_and_wandb_sweeps_are_refused_by_name(tmp_path: Path, backend: str, words: str) -> None:
    trainer = _tiny_trainer(tmp_path, lambda: TinyRegressor())
    with pytest.raises(NotImplementedError, match=words):
        trainer.hyperparameter_search(backend=backend)


def test_a_search_needs_model_init(tmp_path: Path) -> None:
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, disable_tqdm=True)
    with pytest.raises(RuntimeError, match="model_init"):
        Trainer(model=TinyRegressor(), args=args).hyperparameter_search(n_trials=1)
