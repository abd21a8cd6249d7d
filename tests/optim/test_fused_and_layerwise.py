"""LOMO, AdaLomo and the layer-wise GaLore/APOLLO names: the same run as the real ``transformers.Trainer``.

These optimizers update the parameters inside the backward (LOMO's fused backward at the current
learning rate; one optimizer per parameter stepped from a gradient hook), so the loop's own step,
clipping and schedule behave as HF's loop makes them behave; the runs below compare the logged
losses, learning rates and grad norms and the final parameters. Where HF refuses a configuration,
statetrain refuses it too.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import pytest
import torch

import statetrain
from statetrain.args.enums import ParallelMode
from statetrain.optim.layerwise import LayerWiseDummyOptimizer, LayerWiseDummyScheduler
from statetrain.optim.optimizers import get_optimizer_cls_and_kwargs
from tests.helpers import TinyRegressor, regression_rows

transformers = pytest.importorskip("transformers")
pytest.importorskip("lomo_optim")

CUDA = torch.cuda.is_available()
NEEDS_CUDA = pytest.mark.skipif(not CUDA, reason="AdaLomo and bitsandbytes' 8-bit AdamW keep their state on CUDA")
LAYERWISE = ["galore_adamw_layerwise", "apollo_adamw_layerwise"]

COMMON: dict[str, Any] = dict(
    per_device_train_batch_size=4,
    max_steps=5,
    learning_rate=1e-2,
    warmup_steps=2,
    logging_steps=1,
    save_strategy="no",
    report_to="none",
    seed=3,
    disable_tqdm=True,
    optim_target_modules=["net.0"],
)


def _options(name: str, **overrides: Any) -> dict[str, Any]:
    options = {**COMMON, "optim": name, "use_cpu": not CUDA, **overrides}
    if name.startswith(("galore", "apollo")):
        options.setdefault("optim_args", "rank=2")
    return options


def run_both(name: str, tmp_path: Any, **overrides: Any) -> tuple[Any, Any]:
    """The same model, rows and arguments trained by transformers and by statetrain."""
    options = _options(name, **overrides)
    torch.manual_seed(0)
    model, rows = TinyRegressor(), regression_rows(40, seed=5)
    trainers = []
    for module in (transformers, statetrain):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer = module.Trainer(
                model=copy.deepcopy(model),
                args=module.TrainingArguments(str(tmp_path / module.__name__), **options),
                train_dataset=rows,
            )
            trainer.train()
        trainers.append(trainer)
    return trainers[0], trainers[1]


def assert_same_run(hf: Any, st: Any) -> None:
    hf_logs = [e for e in hf.state.log_history if "loss" in e]
    st_logs = [e for e in st.state.log_history if "loss" in e]
    assert len(hf_logs) == len(st_logs) == COMMON["max_steps"]
    for a, b in zip(hf_logs, st_logs, strict=True):
        assert a["step"] == b["step"]
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-6)
        assert a["learning_rate"] == pytest.approx(b["learning_rate"], abs=1e-12)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], abs=1e-6)
    theirs = dict(hf.model.named_parameters())
    for name, param in st.model.named_parameters():
        assert torch.allclose(param, theirs[name], atol=1e-6, rtol=0), name


def assert_trained(trainer: Any, model: torch.nn.Module) -> None:
    """The run moved the parameters (the optimizer really stepped somewhere)."""
    before = dict(model.named_parameters())
    assert any(not torch.equal(p.cpu(), before[n].cpu()) for n, p in trainer.model.named_parameters())


@pytest.mark.parametrize("accumulation", [1, 2])
def test_lomo_equals_transformers(accumulation: int, tmp_path: Any) -> None:
    """LOMO updates inside each micro-batch's backward at the scheduled lr; the loop's step does nothing,
    and its clipping finds no gradient left (grad_norm 0, as HF logs)."""
    hf, st = run_both("lomo", tmp_path, gradient_accumulation_steps=accumulation)
    assert_same_run(hf, st)
    assert type(st.optimizer.optimizer).__name__ == "Lomo"
    assert {e["grad_norm"] for e in st.state.log_history if "grad_norm" in e} == {0.0}
    torch.manual_seed(0)
    assert_trained(st, TinyRegressor())


@NEEDS_CUDA
def test_adalomo_equals_transformers(tmp_path: Any) -> None:
    hf, st = run_both("adalomo", tmp_path)
    assert_same_run(hf, st)
    assert type(st.optimizer.optimizer).__name__ == "AdaLomo"


@pytest.mark.skipif(CUDA, reason="on a CUDA machine AdaLomo trains (test_adalomo_equals_transformers)")
def test_adalomo_without_cuda_is_refused_as_transformers_fails(tmp_path: Any) -> None:
    """lomo_optim's AdaLomo allocates its state with ``.cuda()``: HF fails inside train(); statetrain says why."""
    with pytest.raises(RuntimeError, match="AdaLomo keeps its second-moment state on CUDA"):
        run_both_one(statetrain, "adalomo", tmp_path)
    with pytest.raises((AssertionError, RuntimeError)):
        run_both_one(transformers, "adalomo", tmp_path)


def run_both_one(module: Any, name: str, tmp_path: Any, **overrides: Any) -> Any:
    args = module.TrainingArguments(str(tmp_path / module.__name__), **_options(name, **overrides))
    trainer = module.Trainer(model=TinyRegressor(), args=args, train_dataset=regression_rows(8))
    return trainer.train()


@pytest.mark.parametrize("name", [*LAYERWISE, pytest.param("galore_adamw_8bit_layerwise", marks=NEEDS_CUDA)])
def test_layerwise_equals_transformers(name: str, tmp_path: Any) -> None:
    """One optimizer per parameter, stepped from its gradient hook; the dummy's step and zero_grad do
    nothing. As in HF 5.24 the schedule is bound to accelerate's wrapper inside train(), so the logged
    rate follows it while each parameter's optimizer keeps ``learning_rate``."""
    hf, st = run_both(name, tmp_path)
    assert_same_run(hf, st)
    dummy = st.optimizer.optimizer
    assert isinstance(dummy, LayerWiseDummyOptimizer)
    assert {g["lr"] for o in dummy.optimizer_dict.values() for g in o.param_groups} == {COMMON["learning_rate"]}
    torch.manual_seed(0)
    assert_trained(st, TinyRegressor())


def test_galore_adafactor_layerwise_fails_as_in_transformers(tmp_path: Any) -> None:
    """HF builds GaLoreAdafactor per parameter with the learning rate but keeps relative_step=True,
    which the class refuses; statetrain builds the same and fails the same way."""
    for module in (transformers, statetrain):
        with pytest.raises(ValueError, match="Cannot combine manual `lr` and `relative_step=True`"):
            run_both_one(module, "galore_adafactor_layerwise", tmp_path)


@pytest.mark.parametrize("name", LAYERWISE)
def test_layerwise_refuses_gradient_accumulation_as_transformers(name: str, tmp_path: Any) -> None:
    for module in (transformers, statetrain):
        with pytest.raises(ValueError, match="does not support gradient accumulation"):
            run_both_one(module, name, tmp_path, gradient_accumulation_steps=2)


class DistributedArgs(statetrain.TrainingArguments):
    """Arguments that report a DDP run (the process group itself is not needed to reach the refusal)."""

    @property
    def parallel_mode(self) -> ParallelMode:  # type: ignore[override]
        return ParallelMode.DISTRIBUTED


class HFDistributedArgs(transformers.TrainingArguments):
    @property
    def parallel_mode(self) -> Any:
        return transformers.training_args.ParallelMode.DISTRIBUTED


@pytest.mark.parametrize("name", LAYERWISE)
def test_layerwise_refuses_ddp_as_transformers(name: str) -> None:
    options = dict(optim=name, use_cpu=True, optim_target_modules=["net.0"])
    with pytest.raises(NotImplementedError, match="does not support DDP"):
        transformers.Trainer.get_optimizer_cls_and_kwargs(
            HFDistributedArgs("unused", report_to="none", **options), TinyRegressor()
        )
    with pytest.raises(NotImplementedError, match=f"Layer-wise {name} does not support DDP"):
        get_optimizer_cls_and_kwargs(DistributedArgs("unused", **options), TinyRegressor())


@pytest.mark.parametrize("name", LAYERWISE)
def test_layerwise_choice_as_transformers(name: str) -> None:
    """``get_optimizer_cls_and_kwargs``: the dummy, HF's kwargs, and per parameter the same class and
    group settings as HF's ``optimizer_dict``, in the same order."""
    options = dict(optim=name, use_cpu=True, optim_args="rank=2", optim_target_modules=["net.0"])
    ours_model, hf_model = TinyRegressor(), TinyRegressor()
    ours = get_optimizer_cls_and_kwargs(statetrain.TrainingArguments("unused", **options), ours_model)
    theirs = transformers.Trainer.get_optimizer_cls_and_kwargs(
        transformers.TrainingArguments("unused", report_to="none", **options), hf_model
    )
    assert ours[0] is LayerWiseDummyOptimizer and theirs[0].__name__ == "LayerWiseDummyOptimizer"
    assert set(ours[1]) == set(theirs[1]) == {"lr", "optimizer_dict", "params"}
    assert ours[1]["lr"] == theirs[1]["lr"]
    mine, hf = list(ours[1]["optimizer_dict"].values()), list(theirs[1]["optimizer_dict"].values())
    assert [type(o) for o in mine] == [type(o) for o in hf]
    assert [o.param_groups[0]["params"][0].shape for o in mine] == [o.param_groups[0]["params"][0].shape for o in hf]
    for a, b in zip(mine, hf, strict=True):
        assert {k: v for k, v in a.param_groups[0].items() if k != "params"} == {
            k: v for k, v in b.param_groups[0].items() if k != "params"
        }


def _batches(rows: list[dict[str, Any]], size: int) -> list[dict[str, torch.Tensor]]:
    return [{k: torch.stack([r[k] for r in rows[i : i + size]]) for k in rows[0]} for i in range(0, len(rows), size)]


def test_create_scheduler_outside_train_schedules_each_parameter(tmp_path: Any) -> None:
    """``create_optimizer`` then ``create_scheduler`` with no train(): as HF's ``get_scheduler`` intends,
    each parameter's optimizer gets its own schedule, stepped from a hook after it. HF 5.24's stand-in
    fails on torch 2.13 (its first step zips many rates with one group); statetrain's works, and the
    run equals HF's non-layer-wise GaLore stepped by hand (the update is per parameter either way)."""
    options = dict(use_cpu=True, optim_args="rank=2", optim_target_modules=["net.0"], learning_rate=1e-2)
    torch.manual_seed(0)
    model, batches = TinyRegressor(), _batches(regression_rows(12, seed=1), 4)
    hf_args = transformers.TrainingArguments("unused", optim="galore_adamw_layerwise", report_to="none", **options)
    hf = transformers.Trainer(model=copy.deepcopy(model), args=hf_args)
    hf.create_optimizer()
    with pytest.raises(ValueError, match="zip"):
        hf.create_scheduler(num_training_steps=4)

    args = statetrain.TrainingArguments("unused", optim="galore_adamw_layerwise", warmup_steps=1, **options)
    ours = statetrain.Trainer(model=copy.deepcopy(model), args=args)
    ours.create_optimizer()
    scheduler = ours.create_scheduler(num_training_steps=4)
    ref_args = transformers.TrainingArguments(
        "unused", optim="galore_adamw", warmup_steps=1, report_to="none", **options
    )
    ref = transformers.Trainer(model=copy.deepcopy(model), args=ref_args)
    ref.create_optimizer_and_scheduler(num_training_steps=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for batch in batches:
            ours.model(**batch)["loss"].backward()
            ref.model(**batch)["loss"].backward()
            ref.optimizer.step()
            ref.lr_scheduler.step()
            ref.optimizer.zero_grad()
    assert isinstance(scheduler, LayerWiseDummyScheduler)
    assert scheduler.get_lr() == pytest.approx([ref.lr_scheduler.get_last_lr()[0]] * 4)  # 2 weights, 2 biases
    assert scheduler.get_lr()[0] == pytest.approx(1e-2 / 3)
    theirs = dict(ref.model.named_parameters())
    for name, param in ours.model.named_parameters():
        assert torch.allclose(param, theirs[name], atol=1e-6, rtol=0), name


@pytest.mark.parametrize("name", ["adamw_torch", "lomo"])
def test_backward_and_step_are_chosen_once_per_train(name: str, tmp_path: Any) -> None:
    """Every other optimizer keeps the plain backward and the direct step of the inner optimizer (no
    per-step check added); LOMO's backward gets the current learning rate and its step goes through
    accelerate's wrapper, which skips it."""
    args = statetrain.TrainingArguments(str(tmp_path), **{**_options(name), "max_steps": 2, "use_cpu": True})
    trainer = statetrain.Trainer(model=TinyRegressor(), args=args, train_dataset=regression_rows(8))
    trainer.train()
    stepped = trainer._run.step_optimizer
    if name == "adamw_torch":
        assert trainer._backward_kwargs is None
        assert type(stepped) is torch.optim.AdamW
    else:
        assert trainer._backward_kwargs is not None
        assert trainer._backward_kwargs() == {"learning_rate": trainer._get_learning_rate()}
        assert stepped is trainer.optimizer and type(stepped.optimizer).__name__ == "Lomo"
