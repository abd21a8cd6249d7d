"""Layer-wise optimizers (``galore_*_layerwise``, ``apollo_adamw_layerwise``) as transformers 5.24 runs them.

Each parameter gets its own optimizer, stepped and cleared from a post-accumulate-grad hook while
the backward runs, so a full set of gradients never exists at once. The Trainer holds a
:class:`LayerWiseDummyOptimizer` whose ``step`` and ``zero_grad`` do nothing; the loop around it
is unchanged (its clipping then sees no gradients and reports a norm of 0, as in HF).

Schedules: :func:`statetrain.optim.schedulers.get_scheduler` given the dummy itself builds one
schedule per parameter, stepped from a second hook, and returns a :class:`LayerWiseDummyScheduler`
that reports their learning rates (HF's ``get_scheduler``). Inside ``train()`` the schedule is
built on accelerate's wrapper around the dummy, as HF 5.24 does, so there the per-parameter
optimizers keep ``learning_rate`` and only the logged rate follows the schedule.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch.optim.lr_scheduler import LRScheduler

if TYPE_CHECKING:
    from statetrain.optim.optimizers import OptimizerContext


class LayerWiseDummyOptimizer(torch.optim.Optimizer):
    """Stands in for the per-parameter optimizers in ``optimizer_dict``, which their hooks step.

    Its one group holds a 1x1 placeholder drawn from the global generator, as HF's does, so the
    random stream after the optimizer is built (data order, dropout) is the same as under HF.
    """

    def __init__(self, optimizer_dict: Mapping[torch.Tensor, torch.optim.Optimizer] | None = None, **kwargs: Any):
        self.optimizer_dict = optimizer_dict
        super().__init__([torch.randn(1, 1)], {"lr": kwargs.get("lr", 1e-3)})

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Nothing to clear: each parameter's hook cleared its gradient after stepping it."""

    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        """Nothing to do: each parameter was stepped by its hook during the backward."""


class LayerWiseDummyScheduler(LRScheduler):
    """Stands in for the per-parameter schedules; ``get_lr`` lists every parameter optimizer's rate.

    ``step`` only records them (the dummy's one group and ``get_last_lr`` take the first): torch
    2.13's own ``step`` zips the rates with the dummy's one group strictly, which makes HF 5.24's
    stand-in fail on its first step (a deliberate difference, docs/differences.md).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.default_lr = kwargs["lr"]
        super().__init__(LayerWiseDummyOptimizer(**kwargs), -1)

    def step(self, epoch: int | None = None) -> None:
        self._step_count = getattr(self, "_step_count", 0) + 1
        self.last_epoch += 1
        rates = self.get_lr()
        group = self.optimizer.param_groups[0]
        group["lr"] = rates[0] if rates else self.default_lr
        self._last_lr = [group["lr"]]

    def get_lr(self) -> list[float]:  # type: ignore[override]
        optimizers = getattr(self.optimizer, "optimizer_dict", None)
        if optimizers is None:
            return [self.default_lr]
        return list(itertools.chain.from_iterable([g["lr"] for g in o.param_groups] for o in optimizers.values()))

    def _get_closed_form_lr(self) -> list[Any]:
        return list(self.base_lrs)


def per_parameter_schedules(
    optimizer: LayerWiseDummyOptimizer, get_scheduler: Callable[..., Any], name: Any, *arguments: Any
) -> LayerWiseDummyScheduler:
    """``get_scheduler(name, optimizer, *arguments)`` for each parameter's optimizer, stepped after it
    (that parameter's optimizer hook was registered first), and the stand-in that reports their rates."""
    optimizers = optimizer.optimizer_dict or {}
    schedules = {param: get_scheduler(name, opt, *arguments) for param, opt in optimizers.items()}

    def step_schedule(param: torch.Tensor) -> None:
        schedules[param].step()

    for param in optimizers:
        if param.requires_grad:
            param.register_post_accumulate_grad_hook(step_schedule)
    return LayerWiseDummyScheduler(optimizer_dict=optimizers, lr=optimizer.defaults["lr"])


def refuse_distributed(ctx: OptimizerContext) -> None:
    """HF's first check for a layer-wise name: no DDP (each parameter steps before the processes average it)."""
    from statetrain.args.enums import ParallelMode

    if getattr(ctx.args, "parallel_mode", None) == ParallelMode.DISTRIBUTED:
        raise NotImplementedError(
            f"Layer-wise {ctx.name} does not support DDP at this time (optim={ctx.name!r} steps each parameter "
            "from its gradient hook, before the processes average the gradients); use the variant without _layerwise"
        )


def layerwise(
    ctx: OptimizerContext, cls: Any, groups: list[dict[str, Any]], optimizer_kwargs: dict[str, Any]
) -> tuple[Any, dict[str, Any]]:
    """Build ``cls`` once per parameter (the targeted ones with their group's projection settings), hook
    each to step and clear its parameter's gradient, and return the dummy with HF's kwargs.

    Refused with gradient accumulation, as HF refuses it: a gradient reaches its hook before the rest
    of the window has contributed to it (:func:`refuse_distributed` refuses DDP first).
    """
    name = ctx.name
    if ctx.args.gradient_accumulation_steps != 1:
        raise ValueError(
            f"Layerwise {name} does not support gradient accumulation! (optim={name!r} steps each parameter as soon "
            f"as its gradient exists; set gradient_accumulation_steps=1, not {ctx.args.gradient_accumulation_steps})"
        )
    optimizer_dict: dict[torch.Tensor, torch.optim.Optimizer] = {}
    for group in groups:
        settings = {k: v for k, v in group.items() if k != "params"}
        for param in group["params"]:
            optimizer_dict[param] = cls([{"params": [param], **settings}], **optimizer_kwargs)

    def step_parameter(param: torch.Tensor) -> None:
        if param.grad is not None:
            optimizer_dict[param].step()
            optimizer_dict[param].zero_grad()

    assert ctx.model is not None
    for param in ctx.model.parameters():
        if param.requires_grad:
            param.register_post_accumulate_grad_hook(step_parameter)
    return LayerWiseDummyOptimizer, {**optimizer_kwargs, "optimizer_dict": optimizer_dict, "params": groups}
