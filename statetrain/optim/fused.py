"""Optimizers that update the parameters during the backward (LOMO, AdaLomo, the layer-wise ones).

What the Trainer decides about them once per ``train()``, so the per-step code of every other
optimizer stays as it is: the keyword arguments of each backward (HF passes the current learning
rate for ``lomo``/``adalomo``, and ``scale_wrt_gas=False`` under DeepSpeed) and whether the optimize
state may step the optimizer under accelerate's wrapper directly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from statetrain.optim.layerwise import LayerWiseDummyOptimizer
from statetrain.optim.optimizers import name_of

FUSED_BACKWARD = ("lomo", "adalomo")
"""The ``optim`` names whose backward HF runs as the optimizer's fused backward at the current lr."""

BackwardKwargs = Callable[[], dict[str, Any]]


def backward_kwargs(optim: Any, deepspeed: bool, learning_rate: Callable[[], float]) -> BackwardKwargs | None:
    """What each backward passes to ``accelerator.backward`` beyond the loss (``None``: nothing).

    As in HF, the choice follows ``args.optim``: accelerate then runs LOMO's fused backward when it
    holds a LOMO optimizer and a plain backward otherwise.
    """
    fused = name_of(optim) in FUSED_BACKWARD
    if not (fused or deepspeed):
        return None

    def kwargs() -> dict[str, Any]:
        extra: dict[str, Any] = {"learning_rate": learning_rate()} if fused else {}
        if deepspeed:  # the loss is already scaled for accumulation; DeepSpeed must not divide again (HF)
            extra["scale_wrt_gas"] = False
        return extra

    return kwargs


def steps_in_backward(optimizer: Any) -> bool:
    """Whether ``optimizer`` (unwrapped) updates inside the backward, so only accelerate's wrapper may be
    stepped: LOMO's own ``step`` is torch's unimplemented one (accelerate's wrapper skips it), and a
    layer-wise run's schedule is bound to the wrapper, as in HF."""
    if isinstance(optimizer, LayerWiseDummyOptimizer):
        return True
    return type(optimizer).__module__.startswith("lomo_optim")
