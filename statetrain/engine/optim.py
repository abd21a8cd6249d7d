"""The default optimizer and schedule: AdamW with HF's weight-decay grouping, linear warmup/decay."""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
from torch import nn

NO_DECAY_PATTERNS = (r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)")


def parameter_names_outside(
    model: nn.Module,
    forbidden_types: tuple[type[nn.Module], ...],
    forbidden_patterns: Sequence[re.Pattern[str]],
) -> list[str]:
    """Parameter names not inside a forbidden layer type and not matching a pattern (HF rule)."""
    names: list[str] = []
    for child_name, child in model.named_children():
        for inner in parameter_names_outside(child, forbidden_types, forbidden_patterns):
            full = f"{child_name}.{inner}"
            if not isinstance(child, forbidden_types) and not any(p.search(full.lower()) for p in forbidden_patterns):
                names.append(full)
    names += [k for k in model._parameters if not any(p.search(k.lower()) for p in forbidden_patterns)]
    return names


def decay_parameter_names(model: nn.Module) -> list[str]:
    """Names of the parameters weight decay applies to: not biases, not norm weights."""
    patterns = [re.compile(p) for p in NO_DECAY_PATTERNS]
    return parameter_names_outside(model, (nn.LayerNorm,), patterns)


def grouped_parameters(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay = set(decay_parameter_names(model))
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [
        {"params": [p for n, p in named if n in decay], "weight_decay": weight_decay},
        {"params": [p for n, p in named if n not in decay], "weight_decay": 0.0},
    ]


def parse_optim_args(text: str | None) -> dict[str, str]:
    """``"a=1,b=2"`` → ``{"a": "1", "b": "2"}`` (HF ``optim_args``)."""
    if not text:
        return {}
    parsed: dict[str, str] = {}
    for item in text.replace(" ", "").split(","):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"optim_args entry {item!r} is not of the form key=value")
        parsed[key] = value
    return parsed


def adamw_class_and_kwargs(args: Any) -> tuple[type[torch.optim.Optimizer], dict[str, Any]]:
    """``adamw_torch`` / ``adamw_torch_fused`` as HF builds them."""
    kwargs: dict[str, Any] = {
        "lr": args.learning_rate,
        "betas": (args.adam_beta1, args.adam_beta2),
        "eps": args.adam_epsilon,
    }
    if str(getattr(args.optim, "value", args.optim)) == "adamw_torch_fused":
        kwargs["fused"] = True
    return torch.optim.AdamW, kwargs


def _linear_warmup_decay(step: int, *, warmup: int, total: int) -> float:
    if step < warmup:
        return float(step) / float(max(1, warmup))
    return max(0.0, float(total - step) / float(max(1, total - warmup)))


def linear_schedule_with_warmup(
    optimizer: torch.optim.Optimizer, num_warmup_steps: int, num_training_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup from 0, then linear decay to 0 at ``num_training_steps``."""
    fn = partial(_linear_warmup_decay, warmup=num_warmup_steps, total=num_training_steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)
