"""transformers 5.24's ``OptimizerNames`` that come from other packages, with HF's classes and kwargs.

Each factory builds what transformers' ``Trainer.get_optimizer_cls_and_kwargs`` builds for the name
(same class, same keyword arguments, ``optim_args`` read the same way), so a run configured for HF
trains the same here. A name whose package is missing fails naming the package to install; the
names statetrain cannot run (device-specific builds) fail saying why, before any training.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from statetrain.optim.low_rank import apollo, galore

if TYPE_CHECKING:
    from statetrain.optim.optimizers import OptimizerContext

Factory = Callable[["OptimizerContext"], tuple[Any, dict[str, Any]]]
_TRUE = ("y", "yes", "t", "true", "on", "1")


def _require(name: str, module: str, install: str) -> Any:
    """Import ``module`` or fail naming the optimizer and what to install."""
    if importlib.util.find_spec(module.split(".")[0]) is None:
        raise ImportError(f"optim={name!r} needs the {install} package: pip install {install}")
    return importlib.import_module(module)


def _raw(ctx: OptimizerContext) -> dict[str, str]:
    return dict(ctx.optim_args)


def _betas_eps(ctx: OptimizerContext) -> dict[str, Any]:
    return {"betas": (ctx.args.adam_beta1, ctx.args.adam_beta2), "eps": ctx.args.adam_epsilon}


def _bitsandbytes(ctx: OptimizerContext) -> tuple[Any, dict[str, Any]]:
    """bitsandbytes' AdamW, Lion, RMSprop and AdEMAMix: 8 or 32 bits, paged or not, from the name."""
    optim = _require(ctx.name, "bitsandbytes.optim", "bitsandbytes")
    name, given = ctx.name, _raw(ctx)
    kwargs: dict[str, Any] = ctx.lr_kwargs()
    if "adam" in name:
        cls, extra = optim.AdamW, _betas_eps(ctx)
    elif "lion" in name:
        cls, extra = optim.Lion, {"betas": (ctx.args.adam_beta1, ctx.args.adam_beta2)}
    elif "rmsprop" in name:
        cls, extra = optim.RMSprop, given  # transformers passes optim_args through as given
    else:  # ademamix
        cls = optim.AdEMAMix
        extra = {
            "betas": (
                float(given.get("beta1", ctx.args.adam_beta1)),
                float(given.get("beta2", ctx.args.adam_beta2)),
                float(given.get("beta3", 0.9999)),
            ),
            "alpha": float(given.get("alpha", 5.0)),
            "eps": float(given.get("eps", ctx.args.adam_epsilon)),
        }
        for key in ("t_alpha", "t_beta3"):
            if key in given:
                extra[key] = int(given[key])
    kwargs.update(extra)
    kwargs["optim_bits"] = 8 if "8bit" in name else 32
    if "rmsprop" not in name:
        kwargs["is_paged"] = "paged" in name
    return cls, kwargs


def _torchao(ctx: OptimizerContext) -> tuple[Any, dict[str, Any]]:
    """torchao's 4-bit and 8-bit AdamW."""
    optim = _require(ctx.name, "torchao.optim", "torchao")
    given = _raw(ctx)
    cls = optim.AdamW4bit if ctx.name == "adamw_torch_4bit" else optim.AdamW8bit
    kwargs = {
        **ctx.lr_kwargs(),
        "block_size": given.get("block_size", 256),
        "bf16_stochastic_round": given.get("bf16_stochastic_round", "False").lower() in _TRUE,
        **_betas_eps(ctx),
    }
    return cls, kwargs


def _schedule_free(ctx: OptimizerContext) -> tuple[Any, dict[str, Any]]:
    """schedulefree's RAdam, AdamW and SGD; warm-up and weight decay come from the arguments."""
    module = _require(ctx.name, "schedulefree", "schedulefree")
    given = _raw(ctx)
    kwargs: dict[str, Any] = ctx.lr_kwargs()
    if ctx.name == "schedule_free_radam":
        cls, warmup = module.RAdamScheduleFree, False
        kwargs.update(_betas_eps(ctx))
    elif ctx.name == "schedule_free_adamw":
        cls, warmup = module.AdamWScheduleFree, True
        kwargs.update(_betas_eps(ctx))
    else:
        cls, warmup = module.SGDScheduleFree, True
    kwargs["weight_decay"] = ctx.args.weight_decay
    if warmup:
        kwargs["warmup_steps"] = ctx.args.warmup_steps
    kwargs.update(weight_lr_power=float(given.get("weight_lr_power", 2.0)), r=float(given.get("r", 0.0)))
    return cls, kwargs


def _grokadamw(ctx: OptimizerContext) -> tuple[Any, dict[str, Any]]:
    module = _require(ctx.name, "grokadamw", "grokadamw")
    given = _raw(ctx)
    defaults = {"alpha_init": 0.98, "lamb": 2.0, "gamma": 0.1, "grokking_signal_decay_rate": 0.1,
                "gradient_clipping": 1.0}  # fmt: skip
    return module.GrokAdamW, {**ctx.lr_kwargs(), **{k: float(given.get(k, v)) for k, v in defaults.items()}}


def _stable_adamw(ctx: OptimizerContext) -> tuple[Any, dict[str, Any]]:
    module = _require(ctx.name, "optimi", "torch-optimi")
    given = _raw(ctx)
    max_lr = given.get("max_lr")
    kahan_sum = given.get("kahan_sum")
    kwargs = {
        **ctx.lr_kwargs(),
        **_betas_eps(ctx),
        "weight_decay": ctx.args.weight_decay,
        "decouple_lr": bool(given.get("decouple_lr", False)),
        "max_lr": None if max_lr is None else float(max_lr),
        "kahan_sum": None if kahan_sum is None else bool(kahan_sum),
    }
    return module.StableAdamW, kwargs


def _lomo(ctx: OptimizerContext) -> tuple[Any, dict[str, Any]]:
    """lomo_optim's Lomo and AdaLomo, built over the model: they update each parameter inside the backward.

    The Trainer then passes the current learning rate to accelerate's backward, which runs the
    optimizer's fused backward; ``step`` does nothing (statetrain.optim.fused). transformers reads no
    ``optim_args`` for them.
    """
    module = _require(ctx.name, "lomo_optim", "lomo-optim")
    if ctx.model is None:
        raise ValueError(f"optim={ctx.name!r} needs the model: the optimizer hooks into its parameters")
    ctx.converted()
    if ctx.name == "adalomo" and not torch.cuda.is_available():
        raise RuntimeError(
            "optim='adalomo': lomo_optim's AdaLomo keeps its second-moment state on CUDA (it calls .cuda()), "
            "and this torch sees no CUDA device; transformers fails here too. Use optim='lomo' on CPU"
        )
    cls = module.AdaLomo if ctx.name == "adalomo" else module.Lomo
    return cls, {**ctx.lr_kwargs(), "model": ctx.model}


def _refuse(reason: str) -> Factory:
    def factory(ctx: OptimizerContext) -> tuple[Any, dict[str, Any]]:
        raise NotImplementedError(f"optim={ctx.name!r}: {reason}")

    return factory


_BNB = [
    "adamw_bnb_8bit", "adamw_8bit", "paged_adamw_32bit", "paged_adamw_8bit", "ademamix", "ademamix_8bit",
    "paged_ademamix_32bit", "paged_ademamix_8bit", "lion_8bit", "lion_32bit", "paged_lion_32bit", "paged_lion_8bit",
    "rmsprop_bnb", "rmsprop_bnb_8bit", "rmsprop_bnb_32bit",
]  # fmt: skip
_LOW_RANK = [
    "galore_adamw", "galore_adamw_8bit", "galore_adafactor", "galore_adamw_layerwise",
    "galore_adamw_8bit_layerwise", "galore_adafactor_layerwise", "apollo_adamw", "apollo_adamw_layerwise",
]  # fmt: skip

PACKAGE_OPTIMIZERS: dict[str, Factory] = {
    **dict.fromkeys(_BNB, _bitsandbytes),
    "adamw_torch_4bit": _torchao,
    "adamw_torch_8bit": _torchao,
    "schedule_free_radam": _schedule_free,
    "schedule_free_adamw": _schedule_free,
    "schedule_free_sgd": _schedule_free,
    "grokadamw": _grokadamw,
    "stable_adamw": _stable_adamw,
    "adamw_torch_xla": _refuse("needs torch_xla (a TPU build of torch), which statetrain does not run on"),
    "adamw_torch_npu_fused": _refuse(
        "needs torch_npu (an Ascend NPU build of torch), which statetrain does not run on"
    ),
    "adamw_anyprecision": _refuse("needs torchdistx's AnyPrecisionAdamW: pip install torchdistx (not yet supported)"),
    "lomo": _lomo,
    "adalomo": _lomo,
    **{name: galore for name in _LOW_RANK if name.startswith("galore")},
    **{name: apollo for name in _LOW_RANK if name.startswith("apollo")},
}


def keep_embeddings_in_32_bits(optimizer_cls: Any, kwargs: dict[str, Any], model: Any) -> int:
    """For an 8-bit bitsandbytes optimizer, keep every ``nn.Embedding`` weight's state in 32 bits.

    transformers' ``create_optimizer`` does this (8-bit state for embeddings hurts training) through
    bitsandbytes' ``GlobalOptimManager``; returns how many embedding modules were overridden.
    """
    if "bitsandbytes" not in str(optimizer_cls) or kwargs.get("optim_bits") != 8:
        return 0
    from torch import nn

    manager = importlib.import_module("bitsandbytes.optim").GlobalOptimManager.get_instance()
    embeddings = [m for m in model.modules() if isinstance(m, nn.Embedding)]
    for module in embeddings:
        manager.register_module_override(module, "weight", {"optim_bits": 32})
    return len(embeddings)
