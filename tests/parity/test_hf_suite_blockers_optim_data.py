"""What made transformers' test_trainer_optimizers.py and test_trainer_data.py fail on statetrain.

Issue 13, item 7. Each test does the same thing with transformers and with statetrain: the ``greedy``
schedule (transformers' own ``GreedyLR``, stepped on evaluation metrics, also when passed in
``optimizers``), the keyword names of a schedule's ``lr_lambdas`` partial, the 32-bit state an 8-bit
bitsandbytes optimizer keeps for embeddings, and the cached evaluation loader with persistent workers.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers
from torch import nn
from transformers.optimization import GreedyLR

import statetrain
from statetrain.optim.schedulers import SCHEDULERS, get_scheduler
from tests.helpers import TinyRegressor, regression_rows

LIBRARIES = [transformers, statetrain]


def make(module: Any, out: Path, model: nn.Module | None = None, **options: Any) -> Any:
    options = {"save_strategy": "no", "max_steps": 2, **options}
    args = module.TrainingArguments(str(out), use_cpu=True, report_to="none", disable_tqdm=True, **options)
    return module.Trainer(
        model=model or TinyRegressor(),
        args=args,
        train_dataset=regression_rows(16),
        eval_dataset=regression_rows(8, seed=3),
    )


def logged_lrs(trainer: Any) -> list[float]:
    return [row["learning_rate"] for row in trainer.state.log_history if "learning_rate" in row]


def test_greedy_schedule_by_name_steps_on_eval_like_hf(tmp_path: Path) -> None:
    runs = []
    for module in LIBRARIES:
        torch.manual_seed(0)
        trainer = make(
            module,
            tmp_path / module.__name__,
            max_steps=12,
            learning_rate=0.2,
            lr_scheduler_type="greedy",
            lr_scheduler_kwargs={"patience": 1, "factor": 0.5},
            eval_strategy="steps",
            eval_steps=2,
            logging_steps=1,
            metric_for_best_model="eval_loss",
        )
        trainer.train()
        assert isinstance(trainer.lr_scheduler, GreedyLR)
        runs.append((logged_lrs(trainer), [p.detach().clone() for p in trainer.model.parameters()]))
    (hf_lrs, hf_params), (st_lrs, st_params) = runs
    assert len(set(st_lrs)) > 1, "the greedy schedule must move the lr in this run"
    assert st_lrs == pytest.approx(hf_lrs, rel=1e-12)
    for ours, theirs in zip(st_params, hf_params, strict=True):
        assert torch.allclose(ours, theirs, atol=1e-6, rtol=0)


@pytest.mark.parametrize("module", LIBRARIES, ids=lambda m: m.__name__)
def test_greedy_lr_passed_in_optimizers_steps_on_metrics(module: Any, tmp_path: Path) -> None:
    model = TinyRegressor()
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scheduler = GreedyLR(optimizer, factor=0.8, patience=5, cooldown=2)
    args = module.TrainingArguments(
        str(tmp_path),
        use_cpu=True,
        report_to="none",
        max_steps=4,
        eval_strategy="steps",
        eval_steps=2,
        metric_for_best_model="eval_loss",
    )
    trainer = module.Trainer(
        model,
        args,
        train_dataset=regression_rows(16),
        eval_dataset=regression_rows(8),
        optimizers=(optimizer, scheduler),
    )
    trainer.train()  # stepped without its metric, GreedyLR.step raises a TypeError
    assert trainer.lr_scheduler is scheduler and scheduler.last_epoch == 2


def test_schedule_lambdas_carry_hfs_keywords() -> None:
    """HF's tests compare ``sched.lr_lambdas[0].keywords`` with transformers' own schedule."""
    kwargs: dict[str, dict[str, Any]] = {
        "polynomial": {"power": 5.0, "lr_end": 1e-5},
        "cosine_with_min_lr": {"min_lr": 1e-5},
        "cosine_warmup_with_min_lr": {"min_lr_rate": 0.1},
        "warmup_stable_decay": {"num_decay_steps": 3},
        "inverse_sqrt": {"timescale": 4},
    }
    compared = 0
    for name in sorted(SCHEDULERS):
        if name in ("reduce_lr_on_plateau", "greedy", "constant"):
            continue  # metric-driven, and HF's constant is a bare lambda
        opts = [torch.optim.SGD(nn.Linear(2, 1).parameters(), lr=0.2) for _ in range(2)]
        ours = get_scheduler(name, opts[0], 2, 10, kwargs.get(name))
        theirs = transformers.get_scheduler(name, opts[1], 2, 10, scheduler_specific_kwargs=kwargs.get(name))
        assert isinstance(ours.lr_lambdas[0], partial) and isinstance(theirs.lr_lambdas[0], partial)
        assert ours.lr_lambdas[0].args == theirs.lr_lambdas[0].args
        assert ours.lr_lambdas[0].keywords == theirs.lr_lambdas[0].keywords, name
        compared += 1
    assert compared == 9


class WithEmbedding(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(8, 4)
        self.head = nn.Linear(4, 2)


@pytest.mark.parametrize("optim", ["adamw_8bit", "rmsprop_bnb_8bit", "adamw_bnb_8bit"])
def test_8bit_bitsandbytes_keeps_embeddings_in_32_bits(optim: str, tmp_path: Path) -> None:
    pytest.importorskip("bitsandbytes")  # in the dev extra; optional for users (the optimizers extra)
    overrides = []
    for module in LIBRARIES:
        model = WithEmbedding()
        args = module.TrainingArguments(str(tmp_path), use_cpu=True, report_to="none", optim=optim)
        optimizer = module.Trainer(model=model, args=args).create_optimizer()
        triples = optimizer.mng.module_weight_config_triple
        overrides.append([(name, config) for m, name, config in triples if m is model.embed])
    assert overrides[0] == overrides[1] == [("weight", {"optim_bits": 32})]


def test_32bit_bitsandbytes_registers_no_override(tmp_path: Path) -> None:
    pytest.importorskip("bitsandbytes")
    model = WithEmbedding()
    args = statetrain.TrainingArguments(str(tmp_path), use_cpu=True, report_to="none", optim="rmsprop_bnb_32bit")
    optimizer = statetrain.Trainer(model=model, args=args).create_optimizer()
    assert not [t for t in optimizer.mng.module_weight_config_triple if t[0] is model.embed]


@pytest.mark.parametrize("module", LIBRARIES, ids=lambda m: m.__name__)
def test_persistent_eval_loader_is_reused_for_the_trainers_own_dataset(module: Any, tmp_path: Path) -> None:
    trainer = make(module, tmp_path, dataloader_persistent_workers=True, dataloader_num_workers=1)
    trainer.accelerator.prepare = lambda loader: loader  # what HF's test does, to compare the loaders
    first = trainer.get_eval_dataloader()
    assert trainer.get_eval_dataloader(trainer.eval_dataset) is first
    assert trainer.get_eval_dataloader() is first
