"""``Trainer.hyperparameter_search`` on optuna, with HF's signature, names and results.

Each trial is one ordinary ``train()`` of a fresh ``model_init`` model, with the trial's
hyperparameters set on ``args`` and its files in ``output_dir/run-<trial number>`` (or
``output_dir/<hp_name(trial)>``). Pruning goes through the bus: a subscriber reports each
evaluation's objective to the trial and, when optuna's pruner says so, sets
``should_training_stop``; the run then ends as any stopped run does (epoch end, ``on_train_end``),
so its log history is complete, and the trial is recorded as pruned. A trial that fails (a NaN
objective, a non-finite loss under ``nan_inf_policy="raise"``, out of memory) is recorded as
failed and the search goes on. With an optuna ``storage`` the study is reused: a search started
again completes the ``n_trials`` the study still lacks.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from statetrain.args.support import check_supported_arguments
from statetrain.callbacks.base import TrainerCallback
from statetrain.optim.loss import NonFiniteLossError

logger = logging.getLogger(__name__)

BACKENDS = ("optuna", "ray", "wandb")
# What a trial may raise and still leave the search going, besides the user's ``catch``.
TRIAL_FAILURES: tuple[type[BaseException], ...] = (torch.OutOfMemoryError, NonFiniteLossError)


class BestRun(NamedTuple):
    """HF's ``BestRun``: the best trial's id (its folder is ``run-<run_id>``), objective and hyperparameters."""

    run_id: str
    objective: float | list[float]
    hyperparameters: dict[str, Any]
    run_summary: Any | None = None


def default_compute_objective(metrics: dict[str, float]) -> float:
    """HF's default: the evaluation loss, or the sum of the other metrics when there are any."""
    rest = {
        k: v
        for k, v in metrics.items()
        if k not in ("eval_loss", "epoch") and not k.endswith(("_runtime", "_per_second"))
    }
    return float(sum(rest.values())) if rest else metrics["eval_loss"]


def default_hp_space_optuna(trial: Any) -> dict[str, Any]:
    """HF's default optuna space: learning rate, epochs, seed and batch size."""
    return {
        "learning_rate": trial.suggest_float("learning_rate", 1e-6, 1e-4, log=True),
        "num_train_epochs": trial.suggest_int("num_train_epochs", 1, 5),
        "seed": trial.suggest_int("seed", 1, 40),
        "per_device_train_batch_size": trial.suggest_categorical("per_device_train_batch_size", [4, 8, 16, 32, 64]),
    }


def _backend_name(backend: Any) -> str:
    name = str(getattr(backend, "value", backend)) if backend is not None else None
    if name is None:
        try:
            import optuna  # noqa: F401
        except ImportError as exc:
            raise ImportError(
                "hyperparameter_search needs optuna: pip install optuna (or pip install 'statetrain[hpsearch]')"
            ) from exc
        return "optuna"
    if name not in BACKENDS:
        raise ValueError(f"hyperparameter_search: backend={name!r} is unknown; choose among {list(BACKENDS)}")
    if name == "ray":
        raise NotImplementedError("hyperparameter_search: backend='ray' (Ray Tune) is not implemented; use 'optuna'")
    if name == "wandb":
        raise NotImplementedError(
            "hyperparameter_search: backend='wandb' (W&B sweeps) is not implemented; use 'optuna'"
        )
    return name


class OptunaPruning(TrainerCallback):
    """Reports each evaluation's objective to the trial; stops training when optuna prunes it."""

    def __init__(self, trainer: Any, trial: Any, multi_objective: bool) -> None:
        self.trainer = trainer
        self.trial = trial
        self.multi_objective = multi_objective
        self.pruned = False

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: Any = None, **kwargs: Any) -> None:
        if metrics is None:
            return
        self.trainer.objective = self.trainer.compute_objective(dict(metrics))
        if self.multi_objective:  # optuna cannot prune on several objectives
            return
        self.trial.report(float(self.trainer.objective), state.global_step)
        if self.trial.should_prune():
            self.pruned = True
            control.should_training_stop = True


class HyperparameterSearchMixin:
    """``hyperparameter_search`` and the trial hooks ``train(trial=...)`` calls."""

    args: Any  # the Trainer's
    _train_batch_size: int
    # set by hyperparameter_search, as HF sets them (instance attributes, read with getattr before a search)
    hp_search_backend: str | None
    hp_space: Callable[[Any], dict[str, Any]] | None
    hp_name: Callable[[Any], str] | None
    compute_objective: Callable[[dict[str, float]], Any]
    objective: Any
    _trial: Any = None

    def hyperparameter_search(
        self,
        hp_space: Callable[[Any], dict[str, Any]] | None = None,
        compute_objective: Callable[[dict[str, float]], Any] | None = None,
        n_trials: int = 20,
        direction: str | list[str] = "minimize",
        backend: Any = None,
        hp_name: Callable[[Any], str] | None = None,
        **kwargs: Any,
    ) -> BestRun | list[BestRun]:
        """Search hyperparameters with optuna; ``kwargs`` go to ``optuna.create_study`` (and ``timeout``,
        ``n_jobs``, ``gc_after_trial``, ``catch``, ``callbacks`` to ``study.optimize``).

        Returns the best trial as HF's ``BestRun``, or one per Pareto-optimal trial when
        ``direction`` is a list.
        """
        self.hp_search_backend = _backend_name(backend)
        if getattr(self, "model_init", None) is None:
            raise RuntimeError("hyperparameter_search needs the model passed as a `model_init` function to the Trainer")
        args: Any = self.args
        if args.world_size > 1:
            raise NotImplementedError("hyperparameter_search runs in one process; this run has several")
        self.hp_space = default_hp_space_optuna if hp_space is None else hp_space
        self.hp_name = hp_name
        self.compute_objective = default_compute_objective if compute_objective is None else compute_objective
        try:
            return self._run_optuna(n_trials, direction, **kwargs)
        finally:
            self.hp_search_backend = None

    def _run_optuna(self, n_trials: int, direction: str | list[str], **kwargs: Any) -> BestRun | list[BestRun]:
        import optuna

        optimize = {k: kwargs.pop(k) for k in ("timeout", "n_jobs", "gc_after_trial", "callbacks") if k in kwargs}
        catch = tuple(kwargs.pop("catch", ())) + TRIAL_FAILURES
        if kwargs.get("storage") is not None:
            kwargs.setdefault("load_if_exists", True)  # the same storage and name resume the study
        multi = isinstance(direction, (list, tuple))
        if multi:
            study = optuna.create_study(directions=list(direction), **kwargs)  # type: ignore[arg-type]
        else:
            study = optuna.create_study(direction=direction, **kwargs)  # type: ignore[arg-type]
        finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)
        remaining = n_trials - len(study.get_trials(deepcopy=False, states=finished))
        if remaining > 0:
            study.optimize(
                lambda trial: self._optuna_objective(trial, multi), n_trials=remaining, catch=catch, **optimize
            )
        if multi:
            return [BestRun(str(t.number), list(t.values), t.params) for t in study.best_trials]
        best = study.best_trial
        return BestRun(str(best.number), best.value if best.value is not None else math.nan, best.params)

    def _optuna_objective(self, trial: Any, multi_objective: bool) -> Any:
        """One trial: a full run in its own folder; its objective, or ``TrialPruned`` after the run ends."""
        import optuna

        trainer: Any = self
        base = trainer.args.output_dir
        trainer.objective = None
        pruning = OptunaPruning(trainer, trial, multi_objective)
        trainer.add_callback(pruning)
        trainer.args.output_dir = os.path.join(base, self._trial_run_name(trial))
        try:
            trainer.train(trial=trial)
            if trainer.objective is None:  # no evaluation during training: evaluate once at the end
                trainer.objective = trainer.compute_objective(trainer.evaluate())
        finally:
            trainer.args.output_dir = base
            trainer.pop_callback(pruning)
        if pruning.pruned:
            raise optuna.TrialPruned(f"pruned at step {trainer.state.global_step}")
        if multi_objective:
            return [float(v) for v in trainer.objective]
        return float(trainer.objective)  # NaN: optuna records the trial as failed and goes on

    def _trial_run_name(self, trial: Any) -> str:
        """HF's trial folder name: ``hp_name(trial)`` if given, else ``run-<trial number>``."""
        return self.hp_name(trial) if self.hp_name is not None else f"run-{trial.number}"

    def _hp_search_setup(self, trial: Any) -> None:
        """Put the trial's hyperparameters on ``args`` (cast to each field's type, as HF does)."""
        self._trial = trial
        hp_space = getattr(self, "hp_space", None)
        if getattr(self, "hp_search_backend", None) is None or trial is None or hp_space is None:
            return
        args: Any = self.args
        for key, value in hp_space(trial).items():
            if not hasattr(args, key):
                logger.warning("hyperparameter_search: %r is no TrainingArguments field; it is not set", key)
                continue
            old = getattr(args, key)
            setattr(args, key, type(old)(value) if old is not None else value)
        check_supported_arguments(args)
        self._train_batch_size = args.train_batch_size
        logger.info("Trial %s: %s", trial.number, trial.params)

    def _record_trial(self, state: Any, trial: Any) -> None:
        """HF's trial fields on the state: ``is_hyper_param_search``, ``trial_name``, ``trial_params``."""
        state.is_hyper_param_search = trial is not None
        hp_name = getattr(self, "hp_name", None)
        state.trial_name = hp_name(self._trial) if hp_name is not None and self._trial is not None else None
        params = getattr(trial, "params", None)
        state.trial_params = dict(params) if isinstance(params, dict) else None
