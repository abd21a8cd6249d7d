"""HF's weight-decay grouping: decay everything except biases and normalisation weights."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

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
