"""GaLore and APOLLO: low-rank optimizers over the linear layers ``optim_target_modules`` names.

As in transformers 5.24: the targeted ``nn.Linear`` weights form one parameter group carrying the
projection settings (``rank``, ``update_proj_gap``, ``scale``, ``proj_type``... from
``optim_args``), every other parameter the other group. The layer-wise variants build one optimizer
per parameter, stepped from a gradient hook (:mod:`statetrain.optim.layerwise`); as in HF,
``galore_adafactor_layerwise`` keeps GaLoreAdafactor's ``relative_step=True``, which that class
refuses together with a learning rate.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import re
from typing import TYPE_CHECKING, Any

from torch import nn

from statetrain.optim.layerwise import layerwise, refuse_distributed

if TYPE_CHECKING:
    from statetrain.optim.optimizers import OptimizerContext

logger = logging.getLogger(__name__)


def _matches(targets: str | list[str], name: str) -> tuple[bool, bool]:
    """Whether module ``name`` is targeted, and whether the match came from a regular expression."""
    if isinstance(targets, str):
        return bool(re.fullmatch(targets, name)), targets != name
    if name in targets or any(target in name for target in targets):
        return True, False
    return any(re.fullmatch(target, name) for target in targets), True


def _target_weights(ctx: OptimizerContext) -> list[str]:
    targets = ctx.args.optim_target_modules
    if targets is None:
        raise ValueError(f"optim={ctx.name!r} needs TrainingArguments.optim_target_modules (module names or a regex)")
    if not isinstance(targets, (list, str)):
        raise TypeError(f"optim_target_modules must be a list of names, a regex or 'all-linear', got {targets!r}")
    if ctx.model is None:
        raise ValueError(f"optim={ctx.name!r} needs the model to choose its target modules")
    all_linear = isinstance(targets, str) and targets.replace("_", "-") == "all-linear"
    chosen = []
    for name, module in ctx.model.named_modules():
        found, is_regex = _matches(targets, name)
        if not isinstance(module, nn.Linear):
            if found and not is_regex:
                logger.warning("%s matched optim_target_modules but %s acts only on linear layers", name, ctx.name)
            continue
        if found or all_linear:
            chosen.append(f"{name}.weight")
    if not chosen:
        raise ValueError(f"optim={ctx.name!r}: no linear layer matches optim_target_modules={targets!r}")
    return chosen


def _low_rank(ctx: OptimizerContext, cls: Any, projection: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    is_layerwise = ctx.name.endswith("layerwise")
    if is_layerwise:
        refuse_distributed(ctx)
    chosen = set(_target_weights(ctx))
    assert ctx.model is not None
    named = list(ctx.model.named_parameters())
    groups = [
        {"params": [p for n, p in named if n not in chosen]},
        {"params": [p for n, p in named if n in chosen], **projection},
    ]
    if is_layerwise:
        return layerwise(ctx, cls, groups, ctx.lr_kwargs())
    return cls, {**ctx.lr_kwargs(), "params": groups}


def _module(name: str, module: str, install: str) -> Any:
    if importlib.util.find_spec(module) is None:
        raise ImportError(f"optim={name!r} needs the {install} package: pip install {install}")
    return importlib.import_module(module)


def galore(ctx: OptimizerContext) -> tuple[Any, dict[str, Any]]:
    """GaLoreAdamW / GaLoreAdamW8bit / GaLoreAdafactor from ``galore_torch``."""
    module = _module(ctx.name, "galore_torch", "galore-torch")
    given = dict(ctx.optim_args)
    if "adafactor" in ctx.name:
        cls: Any = module.GaLoreAdafactor
    else:
        cls = module.GaLoreAdamW8bit if "8bit" in ctx.name else module.GaLoreAdamW
    projection = {
        "rank": int(given.get("rank", 128)),
        "update_proj_gap": int(given.get("update_proj_gap", 200)),
        "scale": float(given.get("scale", 0.25)),
        "proj_type": given.get("proj_type", "std"),
    }
    cls, kwargs = _low_rank(ctx, cls, projection)
    if ctx.name == "galore_adafactor":
        kwargs.update(scale_parameter=False, relative_step=False)
    return cls, kwargs


def apollo(ctx: OptimizerContext) -> tuple[Any, dict[str, Any]]:
    """APOLLOAdamW from ``apollo_torch``."""
    module = _module(ctx.name, "apollo_torch", "apollo-torch")
    given = dict(ctx.optim_args)
    projection = {
        "rank": int(given.get("rank", 128)),
        "proj": given.get("proj", "random"),
        "scale_type": given.get("scale_type", "channel"),
        "update_proj_gap": int(given.get("update_proj_gap", 200)),
        "scale": float(given.get("scale", 1.0)),
        "proj_type": given.get("proj_type", "std"),
        "betas": (ctx.args.adam_beta1, ctx.args.adam_beta2),
        "eps": ctx.args.adam_epsilon,
    }
    return _low_rank(ctx, module.APOLLOAdamW, projection)
