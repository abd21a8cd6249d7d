"""Every OptimizerNames value of transformers 5.24: HF's class and kwargs, a run that trains, or a clear refusal."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch

import statetrain
from statetrain.optim.optimizers import OPTIMIZERS, get_optimizer_cls_and_kwargs
from tests.helpers import TinyRegressor, regression_rows

transformers = pytest.importorskip("transformers")

ALL_NAMES = [name.value for name in transformers.training_args.OptimizerNames]
# statetrain's deliberate difference: torch's Adafactor, not transformers' own (docs/differences.md)
DIFFERENT_ON_PURPOSE = {"adafactor"}
REFUSED = {
    "adamw_torch_xla": "torch_xla",
    "adamw_torch_npu_fused": "torch_npu",
    "adamw_anyprecision": "torchdistx",
    # lomo_optim's AdaLomo allocates its state with .cuda(); HF fails inside train() without CUDA
    **({} if torch.cuda.is_available() else {"adalomo": "CUDA"}),
}
# one optimizer per parameter: compared with HF (and trained) in test_fused_and_layerwise.py
LAYERWISE = [n for n in ALL_NAMES if n.endswith("layerwise")]
LOW_RANK = [n for n in ALL_NAMES if n.startswith(("galore", "apollo")) and n not in REFUSED and n not in LAYERWISE]
BUILT = [n for n in ALL_NAMES if n not in REFUSED and n not in DIFFERENT_ON_PURPOSE and n not in LOW_RANK + LAYERWISE]


def hf_choice(name: str, model: Any) -> tuple[Any, dict[str, Any]]:
    args = transformers.TrainingArguments("unused", optim=name, use_cpu=True, report_to="none", optim_args="r=0.5")
    return transformers.Trainer.get_optimizer_cls_and_kwargs(args, model)


def test_every_name_is_registered() -> None:
    assert set(ALL_NAMES) <= set(OPTIMIZERS)


@pytest.mark.parametrize("name", BUILT)
def test_same_class_and_kwargs_as_transformers(name: str) -> None:
    model = TinyRegressor()
    ours = get_optimizer_cls_and_kwargs(
        statetrain.TrainingArguments("unused", optim=name, use_cpu=True, optim_args="r=0.5"), model
    )
    theirs = hf_choice(name, model)
    assert ours[0] is theirs[0]
    assert ours[1] == theirs[1]


@pytest.mark.parametrize("name", LOW_RANK)
def test_low_rank_groups_as_transformers(name: str) -> None:
    """GaLore/APOLLO: the targeted linear weights in a group with the projection settings, as HF."""
    model = TinyRegressor()
    options = dict(optim=name, use_cpu=True, optim_args="rank=2", optim_target_modules=["net.0"])
    ours = get_optimizer_cls_and_kwargs(statetrain.TrainingArguments("unused", **options), model)
    theirs = transformers.Trainer.get_optimizer_cls_and_kwargs(
        transformers.TrainingArguments("unused", report_to="none", **options), model
    )
    assert ours[0] is theirs[0]
    plain = {k: v for k, v in ours[1].items() if k != "params"}
    assert plain == {k: v for k, v in theirs[1].items() if k != "params"}
    for mine, hf in zip(ours[1]["params"], theirs[1]["params"], strict=True):
        assert [id(p) for p in mine["params"]] == [id(p) for p in hf["params"]]
        assert {k: v for k, v in mine.items() if k != "params"} == {k: v for k, v in hf.items() if k != "params"}
    assert [p is model.net[0].weight for p in ours[1]["params"][1]["params"]] == [True]


NEEDS_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="galore_torch's 8-bit AdamW steps on CUDA only")
TRAINABLE = [pytest.param(n, marks=NEEDS_CUDA) if n == "galore_adamw_8bit" else n for n in BUILT + LOW_RANK]


@pytest.mark.slow
@pytest.mark.parametrize("name", TRAINABLE)
def test_trains_on_cpu(name: str, tmp_path: Any) -> None:
    args = statetrain.TrainingArguments(
        str(tmp_path), optim=name, use_cpu=True, max_steps=2, report_to="none", disable_tqdm=True,
        save_strategy="no", per_device_train_batch_size=4, optim_target_modules=["net.0"],
        optim_args="rank=2" if name in LOW_RANK else None,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = statetrain.Trainer(model=TinyRegressor(), args=args, train_dataset=regression_rows(8))
        trainer.train()
    assert trainer.state.global_step == 2


@pytest.mark.parametrize(("name", "reason"), sorted(REFUSED.items()))
def test_the_others_are_refused_saying_why(name: str, reason: str, tmp_path: Any) -> None:
    args = statetrain.TrainingArguments(str(tmp_path), optim=name, use_cpu=True, report_to="none")
    with pytest.raises((NotImplementedError, ImportError, RuntimeError), match=reason):
        get_optimizer_cls_and_kwargs(args, TinyRegressor())
