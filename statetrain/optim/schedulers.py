"""Learning-rate scheduler registry: ``lr_scheduler_type`` name → scheduler, as transformers 5.24 builds it.

Every built-in gives, at every step, the learning rate ``transformers.get_scheduler`` gives for the
same name, warmup, total and ``lr_scheduler_kwargs`` (passed here as ``scheduler_specific_kwargs``).
Step-driven schedules are ``torch.optim.lr_scheduler.LambdaLR`` over module-level functions bound
with ``functools.partial``: ``LambdaLR.state_dict()`` then holds only plain data, and the scheduler
itself pickles (their factor functions live in ``schedule_factors.py``, bound under HF's keyword
names). ``reduce_lr_on_plateau`` is torch's ``ReduceLROnPlateau`` and ``greedy`` transformers' own
``GreedyLR``; both step on evaluation metrics.

Where transformers fails with a bare ``TypeError`` (missing or unexpected keyword) or a late
``ZeroDivisionError``, statetrain raises :class:`SchedulerArgumentError` (a ``ValueError`` that is also
a ``TypeError``) naming the argument. Projects add schedules with :func:`register_scheduler`.
"""

from __future__ import annotations

import inspect
import logging
import sys
import warnings
from collections.abc import Callable, Mapping
from functools import partial
from types import MappingProxyType
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, ReduceLROnPlateau

from statetrain.optim import schedule_factors as f
from statetrain.optim.layerwise import LayerWiseDummyOptimizer, per_parameter_schedules
from statetrain.optim.optimizers import name_of, unknown_name_error

logger = logging.getLogger(__name__)

SchedulerFactory = Callable[..., Any]
"""Called as ``factory(optimizer, num_warmup_steps=..., num_training_steps=..., **scheduler_specific_kwargs)``."""

_STEP_ARGUMENTS = ("num_warmup_steps", "num_training_steps")
_WSD_SHAPES = ("linear", "cosine", "1-sqrt")


class SchedulerArgumentError(ValueError, TypeError):
    """A scheduler argument is missing, unexpected or invalid.

    A ``ValueError`` as statetrain reports configuration errors; also a ``TypeError`` because that is
    what transformers raises for a wrong keyword, so code written against HF still catches it.
    """


# --- argument checks -----------------------------------------------------------------------------


def _require(name: str, argument: str, value: Any) -> Any:
    if value is None:
        raise SchedulerArgumentError(f"lr scheduler {name!r} requires `{argument}`, which was not given")
    return value


def _warn_ignored(name: str, ignored: Mapping[str, Any]) -> None:
    if ignored:
        logger.warning("lr scheduler %r takes no lr_scheduler_kwargs; ignoring %s", name, sorted(ignored))


def _min_lr_rate(name: str, optimizer: Optimizer, min_lr: float | None, min_lr_rate: float | None) -> float:
    """The floor as a fraction of the optimizer's default lr, from exactly one of ``min_lr`` / ``min_lr_rate``."""
    if min_lr is not None and min_lr_rate is not None:
        raise SchedulerArgumentError(f"lr scheduler {name!r} takes `min_lr` or `min_lr_rate`, not both")
    if min_lr is not None:
        return min_lr / optimizer.defaults["lr"]
    if min_lr_rate is None:
        raise SchedulerArgumentError(
            f"lr scheduler {name!r} requires `min_lr` or `min_lr_rate` in lr_scheduler_kwargs, neither was given"
        )
    return min_lr_rate


# --- built-in factories ----------------------------------------------------------------------------


def constant_schedule(
    optimizer: Optimizer, num_warmup_steps: int | None = None, num_training_steps: int | None = None, **ignored: Any
) -> LambdaLR:
    """The optimizer's lr throughout; like HF, every ``lr_scheduler_kwargs`` entry is ignored."""
    _warn_ignored("constant", ignored)
    return LambdaLR(optimizer, f.constant_factor)


def constant_with_warmup_schedule(
    optimizer: Optimizer, num_warmup_steps: int | None = None, num_training_steps: int | None = None, **ignored: Any
) -> LambdaLR:
    """Linear warmup from 0, then constant; like HF, ``lr_scheduler_kwargs`` are ignored."""
    warmup = _require("constant_with_warmup", "num_warmup_steps", num_warmup_steps)
    _warn_ignored("constant_with_warmup", ignored)
    return LambdaLR(optimizer, partial(f.constant_with_warmup_factor, num_warmup_steps=warmup))


def linear_schedule(
    optimizer: Optimizer,
    num_warmup_steps: int | None = None,
    num_training_steps: int | None = None,
    *,
    last_epoch: int = -1,
) -> LambdaLR:
    """Linear warmup from 0, then linear decay to 0 at ``num_training_steps``."""
    warmup = _require("linear", "num_warmup_steps", num_warmup_steps)
    total = _require("linear", "num_training_steps", num_training_steps)
    return LambdaLR(optimizer, partial(f.linear_factor, num_warmup_steps=warmup, num_training_steps=total), last_epoch)


def cosine_schedule(
    optimizer: Optimizer,
    num_warmup_steps: int | None = None,
    num_training_steps: int | None = None,
    *,
    num_cycles: float = 0.5,
    last_epoch: int = -1,
) -> LambdaLR:
    """Linear warmup, then ``num_cycles`` cosine waves (default half a wave: 1 → 0), clipped at 0."""
    warmup = _require("cosine", "num_warmup_steps", num_warmup_steps)
    total = _require("cosine", "num_training_steps", num_training_steps)
    factor = partial(f.cosine_factor, num_warmup_steps=warmup, num_training_steps=total, num_cycles=num_cycles)
    return LambdaLR(optimizer, factor, last_epoch)


def cosine_with_restarts_schedule(
    optimizer: Optimizer,
    num_warmup_steps: int | None = None,
    num_training_steps: int | None = None,
    *,
    num_cycles: float = 1,
    last_epoch: int = -1,
) -> LambdaLR:
    """Linear warmup, then ``num_cycles`` half-cosines each restarting at the full lr; 0 after the end."""
    warmup = _require("cosine_with_restarts", "num_warmup_steps", num_warmup_steps)
    total = _require("cosine_with_restarts", "num_training_steps", num_training_steps)
    factor = partial(f.cosine_restarts_factor, num_warmup_steps=warmup, num_training_steps=total, num_cycles=num_cycles)
    return LambdaLR(optimizer, factor, last_epoch)


def polynomial_schedule(
    optimizer: Optimizer,
    num_warmup_steps: int | None = None,
    num_training_steps: int | None = None,
    *,
    lr_end: float = 1e-7,
    power: float = 1.0,
    last_epoch: int = -1,
) -> LambdaLR:
    """Linear warmup, then ``lr_end + (lr - lr_end) * remaining**power``; ``lr`` is the optimizer default."""
    warmup = _require("polynomial", "num_warmup_steps", num_warmup_steps)
    total = _require("polynomial", "num_training_steps", num_training_steps)
    lr_init = optimizer.defaults["lr"]
    if not lr_init > lr_end:
        raise SchedulerArgumentError(
            f"lr scheduler 'polynomial': lr_end ({lr_end}) must be smaller than the initial lr ({lr_init})"
        )
    factor = partial(
        f.polynomial_factor,
        num_warmup_steps=warmup,
        num_training_steps=total,
        lr_end=lr_end,
        power=power,
        lr_init=lr_init,
    )
    return LambdaLR(optimizer, factor, last_epoch)


def inverse_sqrt_schedule(
    optimizer: Optimizer,
    num_warmup_steps: int | None = None,
    num_training_steps: int | None = None,
    *,
    timescale: float | None = None,
    last_epoch: int = -1,
) -> LambdaLR:
    """Linear warmup, then ``1/sqrt((step + timescale - warmup) / timescale)``; no end, so no total needed.

    ``timescale`` defaults to the warmup (10 000 without warmup), as in transformers.
    """
    warmup = _require("inverse_sqrt", "num_warmup_steps", num_warmup_steps)
    if timescale is None:
        timescale = warmup or 10_000
    if not timescale > 0:
        raise SchedulerArgumentError(f"lr scheduler 'inverse_sqrt': timescale must be > 0, got {timescale}")
    return LambdaLR(optimizer, partial(f.inverse_sqrt_factor, num_warmup_steps=warmup, timescale=timescale), last_epoch)


def reduce_lr_on_plateau_schedule(
    optimizer: Optimizer,
    num_warmup_steps: int | None = None,
    num_training_steps: int | None = None,
    **plateau_kwargs: Any,
) -> ReduceLROnPlateau:
    """torch's ``ReduceLROnPlateau`` with ``lr_scheduler_kwargs`` as its kwargs; warmup and total are unused."""
    accepted = [p for p in inspect.signature(ReduceLROnPlateau).parameters if p != "optimizer"]
    unexpected = sorted(set(plateau_kwargs) - set(accepted))
    if unexpected:
        raise SchedulerArgumentError(
            f"lr scheduler 'reduce_lr_on_plateau' got unexpected lr_scheduler_kwargs {unexpected}; "
            f"ReduceLROnPlateau accepts {accepted}"
        )
    return ReduceLROnPlateau(optimizer, **plateau_kwargs)


def greedy_schedule(
    optimizer: Optimizer,
    num_warmup_steps: int | None = None,
    num_training_steps: int | None = None,
    **greedy_kwargs: Any,
) -> Any:
    """transformers' own ``GreedyLR`` (metric-driven, stepped on evaluations like the plateau schedule).

    It is transformers' class itself, not a port, so ``lr_scheduler_type="greedy"`` needs transformers
    installed; ``lr_scheduler_kwargs`` are its keyword arguments, warmup and total are unused.
    """
    try:
        from transformers.optimization import GreedyLR
    except ImportError as exc:
        raise ImportError(
            "lr_scheduler_type='greedy' uses transformers' GreedyLR; install it: pip install 'transformers==5.24.*'"
        ) from exc
    accepted = [p for p in inspect.signature(GreedyLR).parameters if p != "optimizer"]
    unexpected = sorted(set(greedy_kwargs) - set(accepted))
    if unexpected:
        raise SchedulerArgumentError(
            f"lr scheduler 'greedy' got unexpected lr_scheduler_kwargs {unexpected}; GreedyLR accepts {accepted}"
        )
    return GreedyLR(optimizer, **greedy_kwargs)


def steps_on_metrics(scheduler: Any) -> bool:
    """Whether ``scheduler`` steps on an evaluation metric (torch's plateau, transformers' ``GreedyLR``).

    transformers is only consulted if already imported: a ``GreedyLR`` cannot exist without it.
    """
    if isinstance(scheduler, ReduceLROnPlateau):
        return True
    optimization = sys.modules.get("transformers.optimization")
    greedy = getattr(optimization, "GreedyLR", None)
    return greedy is not None and isinstance(scheduler, greedy)


def cosine_with_min_lr_schedule(
    optimizer: Optimizer,
    num_warmup_steps: int | None = None,
    num_training_steps: int | None = None,
    *,
    num_cycles: float = 0.5,
    min_lr: float | None = None,
    min_lr_rate: float | None = None,
    last_epoch: int = -1,
) -> LambdaLR:
    """``cosine`` that ends at ``min_lr`` (absolute) or ``min_lr_rate`` (fraction of the lr) instead of 0."""
    warmup = _require("cosine_with_min_lr", "num_warmup_steps", num_warmup_steps)
    total = _require("cosine_with_min_lr", "num_training_steps", num_training_steps)
    floor = _min_lr_rate("cosine_with_min_lr", optimizer, min_lr, min_lr_rate)
    factor = partial(
        f.cosine_factor, num_warmup_steps=warmup, num_training_steps=total, num_cycles=num_cycles, min_lr_rate=floor
    )
    return LambdaLR(optimizer, factor, last_epoch)


def cosine_warmup_with_min_lr_schedule(
    optimizer: Optimizer,
    num_warmup_steps: int | None = None,
    num_training_steps: int | None = None,
    *,
    num_cycles: float = 0.5,
    min_lr: float | None = None,
    min_lr_rate: float | None = None,
    warmup_lr_rate: float | None = None,
    last_epoch: int = -1,
) -> LambdaLR:
    """HF's ``cosine_warmup_with_min_lr``: warmup starts above 0 (``warmup_lr_rate``, default 1/warmup)."""
    name = "cosine_warmup_with_min_lr"
    warmup = _require(name, "num_warmup_steps", num_warmup_steps)
    total = _require(name, "num_training_steps", num_training_steps)
    floor = _min_lr_rate(name, optimizer, min_lr, min_lr_rate)
    factor = partial(
        f.cosine_warmup_min_lr_factor,
        num_warmup_steps=warmup,
        num_training_steps=total,
        num_cycles=num_cycles,
        min_lr_rate=floor,
        warmup_lr_rate=warmup_lr_rate,
    )
    return LambdaLR(optimizer, factor, last_epoch)


def warmup_stable_decay_schedule(
    optimizer: Optimizer,
    num_warmup_steps: int | None = None,
    num_training_steps: int | None = None,
    *,
    num_decay_steps: int | None = None,
    num_stable_steps: int | None = None,
    warmup_type: str = "linear",
    decay_type: str = "cosine",
    min_lr_ratio: float = 0,
    num_cycles: float = 0.5,
    last_epoch: int = -1,
) -> LambdaLR:
    """Warmup, a constant plateau, then decay to ``min_lr_ratio`` (WSD).

    ``num_decay_steps`` is required (in ``lr_scheduler_kwargs``). The plateau lasts ``num_stable_steps``
    if given, else whatever ``num_training_steps`` leaves after warmup and decay.
    """
    name = "warmup_stable_decay"
    warmup = _require(name, "num_warmup_steps", num_warmup_steps)
    decay = _require(name, "num_decay_steps", num_decay_steps)
    if num_training_steps is None and num_stable_steps is None:
        raise SchedulerArgumentError(
            f"lr scheduler {name!r} requires `num_training_steps` or `num_stable_steps`, neither was given"
        )
    if num_training_steps is not None and num_stable_steps is not None:
        warnings.warn(
            f"lr scheduler {name!r}: both num_training_steps and num_stable_steps are given; "
            "num_stable_steps sets the plateau",
            UserWarning,
            stacklevel=2,
        )
    for argument, value in (("warmup_type", warmup_type), ("decay_type", decay_type)):
        if value not in _WSD_SHAPES:
            raise SchedulerArgumentError(f"lr scheduler {name!r}: {argument}={value!r} is not one of {_WSD_SHAPES}")
    if num_stable_steps is None:
        assert num_training_steps is not None
        num_stable_steps = num_training_steps - warmup - decay
    factor = partial(
        f.wsd_factor,
        num_warmup_steps=warmup,
        num_stable_steps=num_stable_steps,
        num_decay_steps=decay,
        warmup_type=warmup_type,
        decay_type=decay_type,
        min_lr_ratio=min_lr_ratio,
        num_cycles=num_cycles,
    )
    return LambdaLR(optimizer, factor, last_epoch)


# --- registry ------------------------------------------------------------------------------------

_REGISTRY: dict[str, SchedulerFactory] = {
    "linear": linear_schedule,
    "cosine": cosine_schedule,
    "cosine_with_restarts": cosine_with_restarts_schedule,
    "polynomial": polynomial_schedule,
    "constant": constant_schedule,
    "constant_with_warmup": constant_with_warmup_schedule,
    "inverse_sqrt": inverse_sqrt_schedule,
    "reduce_lr_on_plateau": reduce_lr_on_plateau_schedule,
    "cosine_with_min_lr": cosine_with_min_lr_schedule,
    "cosine_warmup_with_min_lr": cosine_warmup_with_min_lr_schedule,
    "warmup_stable_decay": warmup_stable_decay_schedule,
    "greedy": greedy_schedule,
}

SCHEDULERS: Mapping[str, SchedulerFactory] = MappingProxyType(_REGISTRY)
"""Read-only view of the registry (name → factory); change it with :func:`register_scheduler`."""


def register_scheduler(name: Any, factory: SchedulerFactory, *, overwrite: bool = False) -> SchedulerFactory:
    """Make ``lr_scheduler_type=name`` call ``factory``; returns the factory.

    The factory is called as ``factory(optimizer, num_warmup_steps=..., num_training_steps=...,
    **scheduler_specific_kwargs)``. Replacing an existing name needs ``overwrite=True``.
    """
    key = name_of(name)
    if not key:
        raise ValueError("a scheduler name must be a non-empty string")
    if not callable(factory):
        raise TypeError(f"the factory for scheduler {key!r} must be callable, got {type(factory).__name__}")
    if key in _REGISTRY and not overwrite:
        raise ValueError(f"scheduler {key!r} is already registered; pass overwrite=True to replace it")
    _REGISTRY[key] = factory
    return factory


def unregister_scheduler(name: Any) -> SchedulerFactory:
    """Remove a name (e.g. one a test registered) and return its factory."""
    key = name_of(name)
    if key not in _REGISTRY:
        raise unknown_name_error("scheduler", key, _REGISTRY)
    return _REGISTRY.pop(key)


def _check_kwargs(name: str, factory: SchedulerFactory, kwargs: Mapping[str, Any]) -> None:
    """Refuse keywords the factory cannot take, listing the ones it can (HF: a bare TypeError)."""
    clash = sorted(set(kwargs) & {"optimizer", *_STEP_ARGUMENTS})
    if clash:
        raise SchedulerArgumentError(
            f"lr_scheduler_kwargs for {name!r} must not set {clash}: the Trainer passes those itself"
        )
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # a builtin or C callable: let the call itself complain
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return
    accepted = sorted(
        p.name
        for p in parameters
        if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        and p.name not in ("optimizer", *_STEP_ARGUMENTS)
    )
    unexpected = sorted(set(kwargs) - set(accepted))
    if unexpected:
        raise SchedulerArgumentError(
            f"lr scheduler {name!r} got unexpected lr_scheduler_kwargs {unexpected}; it accepts {accepted or 'none'}"
        )


def get_scheduler(
    name: Any,
    optimizer: Optimizer,
    num_warmup_steps: int | None = None,
    num_training_steps: int | None = None,
    scheduler_specific_kwargs: Mapping[str, Any] | None = None,
) -> Any:
    """The scheduler registered as ``name`` (a ``str`` or a ``SchedulerType``), like ``transformers.get_scheduler``.

    ``num_warmup_steps`` is ``args.get_warmup_steps(num_training_steps)``, ``scheduler_specific_kwargs``
    ``args.lr_scheduler_kwargs``; a layer-wise dummy optimizer gets one schedule per parameter (HF)."""
    key = name_of(name)
    factory = _REGISTRY.get(key)
    if factory is None:
        raise unknown_name_error("scheduler", key, _REGISTRY)
    kwargs = dict(scheduler_specific_kwargs or {})
    if isinstance(optimizer, LayerWiseDummyOptimizer):  # HF: a schedule per parameter's optimizer
        return per_parameter_schedules(optimizer, get_scheduler, name, num_warmup_steps, num_training_steps, kwargs)
    _check_kwargs(key, factory, kwargs)
    return factory(optimizer, num_warmup_steps=num_warmup_steps, num_training_steps=num_training_steps, **kwargs)
