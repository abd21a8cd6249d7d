"""Clearing gradients without walking the module tree on every step.

``model.zero_grad()`` walks every submodule and deduplicates parameters on each call;
:class:`GradClearer` lists the parameters once per ``train()`` and sets their gradients to
``None``, which is what ``nn.Module.zero_grad`` does (unless a class overrides it).
"""

from __future__ import annotations

from torch import nn


class GradClearer:
    """``model.zero_grad()`` for the model prepared at the start of ``train()``, from a parameter list
    taken once. Any other model (a state swapped it) gets its own ``zero_grad()``."""

    def __init__(self, model: nn.Module, listed: bool = True) -> None:
        """``listed=False`` always calls ``model.zero_grad()`` (the run without the fast path)."""
        self.model = model
        plain = type(model).zero_grad is nn.Module.zero_grad and not getattr(model, "_is_replica", False)
        plain = plain and listed
        self.params = list(model.parameters()) if plain else None

    def __call__(self, model: nn.Module) -> None:
        params = self.params
        if params is None or model is not self.model:
            model.zero_grad()
            return
        for param in params:
            param.grad = None
