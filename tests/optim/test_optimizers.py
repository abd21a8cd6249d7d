"""statetrain's optimizer registry against ``transformers.Trainer.get_optimizer_cls_and_kwargs``."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import nn

from statetrain.optim import optimizers
from statetrain.optim.optimizers import (
    OPTIMIZERS,
    OptimizerContext,
    get_optimizer_cls_and_kwargs,
    parse_optim_args,
    register_optimizer,
    unregister_optimizer,
)

ADAM_SETTINGS: dict[str, Any] = dict(learning_rate=0.01, adam_beta1=0.8, adam_beta2=0.95, adam_epsilon=1e-7)

# (name, optim_args) compared with transformers: both build the same torch class from the same kwargs.
HF_TORCH_CASES = [
    ("adamw_torch", None),
    ("adamw_torch", "foo=1"),  # transformers ignores optim_args for AdamW
    ("adamw_torch_fused", None),
    ("sgd", None),
    ("sgd", "momentum=0.9, nesterov=True, dampening=0"),
    ("sgd", "momentum=0.5,weight_decay=0.01,nesterov=no"),
    ("adagrad", None),
    ("adagrad", "lr_decay=0.01,eps=1e-9,weight_decay=0.001"),
    ("rmsprop", None),
    ("rmsprop", "momentum=0.5,centered=true,alpha=0.9,eps=1e-6"),
]


def hf() -> Any:
    """transformers, or a skip: it is a dev dependency and only the comparisons need it."""
    return pytest.importorskip("transformers")


def hf_args(tmp_path: Path, optim: str, optim_args: str | None = None) -> Any:
    return hf().TrainingArguments(
        output_dir=str(tmp_path),
        optim=optim,
        optim_args=optim_args,
        weight_decay=0.1,
        use_cpu=True,
        report_to="none",
        **ADAM_SETTINGS,
    )


def plain_args(optim: str, optim_args: str | None = None) -> SimpleNamespace:
    return SimpleNamespace(optim=optim, optim_args=optim_args, **ADAM_SETTINGS)


def tiny_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6), nn.LayerNorm(6), nn.Tanh(), nn.Linear(6, 2))


def param_groups(model: nn.Module, weight_decay: float = 0.1) -> list[dict[str, Any]]:
    """HF-style decay / no-decay groups (biases and the LayerNorm excluded), as the Trainer passes them."""
    named = list(model.named_parameters())
    no_decay = {n for n, _ in named if n.endswith("bias") or n.startswith("1.")}
    return [
        {"params": [p for n, p in named if n not in no_decay], "weight_decay": weight_decay},
        {"params": [p for n, p in named if n in no_decay], "weight_decay": 0.0},
    ]


BATCH_X = torch.randn(16, 4, generator=torch.Generator().manual_seed(1))
BATCH_Y = torch.randn(16, 2, generator=torch.Generator().manual_seed(2))


def loss_of(model: nn.Module) -> torch.Tensor:
    return nn.functional.mse_loss(model(BATCH_X), BATCH_Y)


def train(model: nn.Module, opt: torch.optim.Optimizer, steps: int) -> list[float]:
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_of(model)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def assert_same_updates(cls_a: Any, kwargs_a: dict[str, Any], cls_b: Any, kwargs_b: dict[str, Any]) -> None:
    """Three steps of each optimizer on identical copies of one model leave identical parameters."""
    a, b = tiny_model(), tiny_model()
    train(a, cls_a(param_groups(a), **kwargs_a), 3)
    train(b, cls_b(param_groups(b), **kwargs_b), 3)
    changed = False
    for (name, pa), pb, p0 in zip(a.named_parameters(), b.parameters(), tiny_model().parameters(), strict=True):
        assert torch.equal(pa, pb), name
        changed |= not torch.equal(pa, p0)
    assert changed, "the optimizer did not move the parameters at all"


@pytest.mark.parametrize(("name", "optim_args"), HF_TORCH_CASES)
def test_class_kwargs_and_updates_match_transformers(tmp_path: Path, name: str, optim_args: str | None) -> None:
    args = hf_args(tmp_path, name, optim_args)
    model = tiny_model()
    hf_cls, hf_kwargs = hf().Trainer.get_optimizer_cls_and_kwargs(args, model)
    cls, kwargs = get_optimizer_cls_and_kwargs(args, model)
    assert cls is hf_cls
    assert kwargs == hf_kwargs
    assert_same_updates(cls, kwargs, hf_cls, hf_kwargs)


def test_adam_is_statetrains_own_name(tmp_path: Path) -> None:
    # transformers has no plain "adam": its TrainingArguments refuses the name.
    with pytest.raises(ValueError, match="adam"):
        hf_args(tmp_path, "adam")
    cls, kwargs = get_optimizer_cls_and_kwargs(plain_args("adam"), tiny_model())
    assert cls is torch.optim.Adam
    assert kwargs == {"lr": 0.01, "betas": (0.8, 0.95), "eps": 1e-7}
    reference = {"lr": 0.01, "betas": (0.8, 0.95), "eps": 1e-7}
    assert_same_updates(cls, kwargs, torch.optim.Adam, reference)


def test_adafactor_is_torchs_and_trains(tmp_path: Path) -> None:
    # No update comparison: transformers builds its own Adafactor class (fixed step = lr), statetrain
    # torch.optim.Adafactor (relative, parameter-scaled step capped by lr); the numbers differ by design.
    args = hf_args(tmp_path, "adafactor")
    hf_cls, hf_kwargs = hf().Trainer.get_optimizer_cls_and_kwargs(args, tiny_model())
    assert hf_cls is hf().Adafactor
    assert hf_kwargs == {"lr": 0.01, "scale_parameter": False, "relative_step": False}

    cls, kwargs = get_optimizer_cls_and_kwargs(args, tiny_model())
    assert cls is torch.optim.Adafactor
    assert kwargs == {"lr": 0.01}
    model = tiny_model()
    losses = train(model, cls(param_groups(model), **kwargs), 30)
    assert losses[-1] < 0.8 * losses[0]

    cls, kwargs = get_optimizer_cls_and_kwargs(plain_args("adafactor", "beta2_decay=-0.5,d=2,maximize=false"))
    assert kwargs == {"lr": 0.01, "beta2_decay": -0.5, "d": 2.0, "maximize": False}


def test_default_hf_optimizer_is_fused_adamw_and_supported_here(tmp_path: Path) -> None:
    args = hf().TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    cls, kwargs = get_optimizer_cls_and_kwargs(args)  # no model: the check uses args.device
    assert cls is torch.optim.AdamW and kwargs["fused"] is True


def test_fused_adamw_refused_where_torch_has_no_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(optimizers, "fused_kernel_devices", lambda: ("cuda",))
    with pytest.raises(ValueError, match=r"adamw_torch_fused.*not for \['cpu'\].*optim='adamw_torch'"):
        get_optimizer_cls_and_kwargs(plain_args("adamw_torch_fused"), tiny_model())
    # Without a model or a device nothing says where it will run: torch decides at the first step.
    assert get_optimizer_cls_and_kwargs(plain_args("adamw_torch_fused"))[1]["fused"] is True


def test_fused_adamw_refuses_non_float_parameters() -> None:
    model = tiny_model()
    model.register_parameter("phase", nn.Parameter(torch.zeros(2, dtype=torch.complex64)))
    with pytest.raises(ValueError, match=r"floating-point.*complex64"):
        get_optimizer_cls_and_kwargs(plain_args("adamw_torch_fused"), model)
    model.get_parameter("phase").requires_grad_(False)  # frozen parameters are not optimized
    assert get_optimizer_cls_and_kwargs(plain_args("adamw_torch_fused"), model)[1]["fused"] is True


def test_ignored_optim_args_are_reported(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="statetrain.optim.optimizers"):
        _, kwargs = get_optimizer_cls_and_kwargs(plain_args("sgd", "momentum=0.3,momentun=0.4"))
    assert kwargs == {"lr": 0.01, "momentum": 0.3}
    assert "ignores optim_args ['momentun']" in caplog.text


def test_bad_optim_args_are_named() -> None:
    with pytest.raises(ValueError, match="'momentum' is not of the form key=value"):
        get_optimizer_cls_and_kwargs(plain_args("sgd", "momentum"))
    with pytest.raises(ValueError, match="momentum='fast' is not a valid float"):
        get_optimizer_cls_and_kwargs(plain_args("sgd", "momentum=fast"))
    assert parse_optim_args(" a = 1 , b=x,") == {"a": "1", "b": "x"}
    assert parse_optim_args(None) == parse_optim_args("") == {}


def test_unknown_name_suggests_the_closest() -> None:
    with pytest.raises(ValueError, match=r"Unknown optimizer 'adamw_torh'\. Did you mean 'adamw_torch'") as info:
        get_optimizer_cls_and_kwargs(plain_args("adamw_torh"))
    assert "Registered optimizers: adafactor, adagrad, adalomo, adam, adamw_8bit, adamw_anyprecision" in str(info.value)
    with pytest.raises(ValueError, match=r"Unknown optimizer 'my_adam'.*register_optimizer"):
        get_optimizer_cls_and_kwargs(plain_args("my_adam"))


def test_enum_names_and_fresh_kwargs(tmp_path: Path) -> None:
    args = plain_args(hf().training_args.OptimizerNames.SGD)
    cls, kwargs = get_optimizer_cls_and_kwargs(args)
    assert cls is torch.optim.SGD
    kwargs["lr"] = 99.0
    assert get_optimizer_cls_and_kwargs(args)[1]["lr"] == 0.01


# --- extension -----------------------------------------------------------------------------------


def heavy_ball(ctx: OptimizerContext) -> tuple[Any, dict[str, Any]]:
    """A user's optimizer: SGD with momentum 0.9 unless optim_args says otherwise."""
    return torch.optim.SGD, {**ctx.lr_kwargs(), "momentum": 0.9, **ctx.converted(floats=("momentum",))}


def test_registered_optimizer_works_end_to_end() -> None:
    register_optimizer("heavy_ball", heavy_ball)
    try:
        assert OPTIMIZERS["heavy_ball"] is heavy_ball
        with pytest.raises(ValueError, match="already registered"):
            register_optimizer("heavy_ball", heavy_ball)
        args = SimpleNamespace(optim="heavy_ball", optim_args="momentum=0.5", learning_rate=0.05)
        model = tiny_model()
        cls, kwargs = get_optimizer_cls_and_kwargs(args, model)
        assert (cls, kwargs) == (torch.optim.SGD, {"lr": 0.05, "momentum": 0.5})
        losses = train(model, cls(param_groups(model), **kwargs), 10)
        assert losses[-1] < losses[0]
    finally:
        unregister_optimizer("heavy_ball")
    assert "heavy_ball" not in OPTIMIZERS
    with pytest.raises(TypeError):
        OPTIMIZERS["x"] = heavy_ball  # type: ignore[index]


def test_builtins_can_be_replaced_only_on_purpose() -> None:
    original = OPTIMIZERS["sgd"]
    with pytest.raises(ValueError, match="overwrite=True"):
        register_optimizer("sgd", heavy_ball)
    register_optimizer("sgd", heavy_ball, overwrite=True)
    try:
        assert get_optimizer_cls_and_kwargs(plain_args("sgd"))[1]["momentum"] == 0.9
    finally:
        register_optimizer("sgd", original, overwrite=True)
    assert "momentum" not in get_optimizer_cls_and_kwargs(plain_args("sgd"))[1]
