"""Optimizer registry: ``args.optim`` name → ``(optimizer class, constructor kwargs)``.

The built-in names build the same class with the same kwargs as transformers 5.24's
``Trainer.get_optimizer_cls_and_kwargs``, so a run configured for HF trains identically here.
Weight decay is not part of these kwargs: the Trainer passes HF's decay / no-decay parameter
groups, whose ``weight_decay`` entries win over any optimizer-wide default.

Two names depart from transformers on purpose (see their factories):

* ``adam`` does not exist in transformers; statetrain offers plain ``torch.optim.Adam``.
* ``adafactor`` is ``torch.optim.Adafactor`` here, not transformers' own ``Adafactor`` class.

Projects add their own optimizers with :func:`register_optimizer`; nothing else in the Trainer
needs to change for a registered name to be usable as ``optim=...``.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)

OptimizerBuilder = Callable[..., torch.optim.Optimizer]
"""What a factory returns first: normally an optimizer class, called as ``cls(param_groups, **kwargs)``."""

_TRUE_WORDS = ("true", "1", "yes")


@dataclass(frozen=True)
class OptimizerContext:
    """Everything a factory may look at when it chooses a class and kwargs.

    ``optim_args`` is ``args.optim_args`` already split into ``{key: raw string}``; factories decide
    how each value is converted, as transformers does per optimizer.
    """

    name: str
    args: Any
    model: nn.Module | None = None
    optim_args: Mapping[str, str] = field(default_factory=dict)

    def lr_kwargs(self) -> dict[str, Any]:
        """``{"lr": learning_rate}``: what every built-in starts from."""
        return {"lr": self.args.learning_rate}

    def adam_kwargs(self) -> dict[str, Any]:
        """``lr`` plus ``betas``/``eps`` taken from ``adam_beta1``, ``adam_beta2`` and ``adam_epsilon``."""
        return {
            **self.lr_kwargs(),
            "betas": (self.args.adam_beta1, self.args.adam_beta2),
            "eps": self.args.adam_epsilon,
        }

    def converted(
        self, floats: Iterable[str] = (), flags: Iterable[str] = (), ints: Iterable[str] = ()
    ) -> dict[str, Any]:
        """The named ``optim_args`` entries that are present, converted; every other key is reported and dropped.

        Dropping (rather than refusing) unknown keys keeps transformers' behaviour, where such keys are
        silently ignored; the warning is statetrain's addition so a typo does not go unnoticed.
        """
        floats, flags, ints = tuple(floats), tuple(flags), tuple(ints)
        out: dict[str, Any] = {}
        for key, raw in self.optim_args.items():
            if key in floats:
                out[key] = _to_number(float, self.name, key, raw)
            elif key in ints:
                out[key] = _to_number(int, self.name, key, raw)
            elif key in flags:
                out[key] = raw.lower() in _TRUE_WORDS
        ignored = sorted(set(self.optim_args) - set(out))
        if ignored:
            known = sorted((*floats, *ints, *flags))
            logger.warning(
                "optim=%r ignores optim_args %s (it reads only %s)", self.name, ignored, known or "none of them"
            )
        return out


OptimizerFactory = Callable[[OptimizerContext], tuple[OptimizerBuilder, dict[str, Any]]]
"""A registry entry: given the context, return ``(optimizer class or builder, kwargs)``."""


def _to_number(cast: Callable[[str], Any], name: str, key: str, raw: str) -> Any:
    try:
        return cast(raw)
    except ValueError:
        raise ValueError(f"optim_args for optim={name!r}: {key}={raw!r} is not a valid {cast.__name__}") from None


def parse_optim_args(text: str | None) -> dict[str, str]:
    """Split ``"k=v, k2=v2"`` into ``{"k": "v", "k2": "v2"}`` (spaces removed, values left as strings).

    transformers fails on a malformed entry with an unpacking error; here the error names the entry.
    Empty entries (a trailing comma) are skipped instead of failing.
    """
    if not text:
        return {}
    parsed: dict[str, str] = {}
    for entry in text.replace(" ", "").split(","):
        if not entry:
            continue
        pieces = entry.split("=")
        if len(pieces) != 2 or not pieces[0]:
            raise ValueError(f"optim_args entry {entry!r} is not of the form key=value (in {text!r})")
        parsed[pieces[0]] = pieces[1]
    return parsed


def name_of(value: Any) -> str:
    """The plain string behind a name that may be a ``str`` or an enum member (HF's or statetrain's)."""
    if isinstance(value, Enum):
        value = value.value
    return str(value)


# --- built-in factories ---------------------------------------------------------------------------


def _adamw_torch(ctx: OptimizerContext) -> tuple[OptimizerBuilder, dict[str, Any]]:
    """``torch.optim.AdamW`` with lr/betas/eps; transformers ignores ``optim_args`` for it."""
    ctx.converted()
    return torch.optim.AdamW, ctx.adam_kwargs()


def fused_kernel_devices() -> tuple[str, ...]:
    """Device types for which this torch build has fused optimizer kernels."""
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
    except ImportError:  # a torch without the helper only had the CUDA kernels
        return ("cuda",)
    return tuple(_get_fused_kernels_supported_devices())


def _check_fused_adamw(ctx: OptimizerContext) -> None:
    """Fail at configuration time, with the reason, where torch would only fail at the first step."""
    supported = fused_kernel_devices()
    params = [p for p in ctx.model.parameters() if p.requires_grad] if ctx.model is not None else []
    devices = {p.device.type for p in params}
    if not devices:
        device = getattr(ctx.args, "device", None)
        if device is not None:
            devices = {torch.device(device).type}
    unsupported = sorted(d for d in devices if d not in supported)
    if unsupported:
        raise ValueError(
            f"optim='adamw_torch_fused' needs torch's fused AdamW kernel, which torch {torch.__version__} "
            f"provides for device types {list(supported)} but not for {unsupported}; use optim='adamw_torch'"
        )
    not_float = sorted({str(p.dtype) for p in params if not torch.is_floating_point(p)})
    if not_float:
        raise ValueError(
            f"optim='adamw_torch_fused' needs floating-point trainable parameters, the model has {not_float}"
        )


def _adamw_torch_fused(ctx: OptimizerContext) -> tuple[OptimizerBuilder, dict[str, Any]]:
    """``torch.optim.AdamW(fused=True)``, refused up front where the model's device has no fused kernel."""
    _check_fused_adamw(ctx)
    ctx.converted()
    return torch.optim.AdamW, {**ctx.adam_kwargs(), "fused": True}


def _adam(ctx: OptimizerContext) -> tuple[OptimizerBuilder, dict[str, Any]]:
    """``torch.optim.Adam`` with the same lr/betas/eps as ``adamw_torch``.

    transformers 5.24 has no ``adam`` name (its ``TrainingArguments`` refuses it); statetrain adds it
    for users who want Adam proper. Note that Adam's ``weight_decay`` (set per group by the Trainer)
    is classic L2 added to the gradient, not AdamW's decoupled decay. ``optim_args`` are ignored,
    as for ``adamw_torch``.
    """
    ctx.converted()
    return torch.optim.Adam, ctx.adam_kwargs()


def _sgd(ctx: OptimizerContext) -> tuple[OptimizerBuilder, dict[str, Any]]:
    """``torch.optim.SGD``; ``optim_args`` may set momentum, dampening, weight_decay, nesterov."""
    extra = ctx.converted(floats=("momentum", "dampening", "weight_decay"), flags=("nesterov",))
    return torch.optim.SGD, {**ctx.lr_kwargs(), **extra}


def _adagrad(ctx: OptimizerContext) -> tuple[OptimizerBuilder, dict[str, Any]]:
    """``torch.optim.Adagrad``; ``optim_args`` may set lr_decay, weight_decay, eps."""
    extra = ctx.converted(floats=("lr_decay", "weight_decay", "eps"))
    return torch.optim.Adagrad, {**ctx.lr_kwargs(), **extra}


def _rmsprop(ctx: OptimizerContext) -> tuple[OptimizerBuilder, dict[str, Any]]:
    """``torch.optim.RMSprop``; ``optim_args`` may set momentum, alpha, eps, weight_decay, centered."""
    extra = ctx.converted(floats=("momentum", "alpha", "eps", "weight_decay"), flags=("centered",))
    return torch.optim.RMSprop, {**ctx.lr_kwargs(), **extra}


def _adafactor(ctx: OptimizerContext) -> tuple[OptimizerBuilder, dict[str, Any]]:
    """``torch.optim.Adafactor`` (torch >= 2.5), NOT transformers' ``Adafactor`` class.

    statetrain keeps to torch's optimizers; the two algorithms are close but not the same, so a run
    does not reproduce HF's numbers. transformers builds its class with ``lr``,
    ``scale_parameter=False, relative_step=False``; the mapping to torch's arguments is:

    * ``lr`` → ``lr``, but with a different meaning: HF (relative_step=False, scale_parameter=False)
      steps by exactly ``lr``; torch always steps by ``min(lr, 1/sqrt(t)) * max(eps2, RMS(param))``,
      i.e. a relative, parameter-scaled step capped by ``lr``. There is no switch for either in torch.
    * HF ``decay_rate=-0.8`` → ``beta2_decay=-0.8`` (same default).
    * HF ``eps=(1e-30, 1e-3)`` → ``eps=(None, 1e-3)`` (torch's ``None`` means the dtype's epsilon).
    * HF ``clip_threshold=1.0`` → ``d=1.0``.
    * HF ``beta1`` (first moment, off by default) and ``warmup_init`` have no torch counterpart.
    * ``weight_decay`` comes from the Trainer's groups; both apply it decoupled, scaled by lr.

    transformers ignores ``optim_args`` for adafactor; here they may set beta2_decay, d,
    weight_decay (floats) and maximize, foreach (flags).
    """
    cls = getattr(torch.optim, "Adafactor", None)
    if cls is None:
        raise ValueError(f"optim='adafactor' uses torch.optim.Adafactor, which torch {torch.__version__} lacks")
    extra = ctx.converted(floats=("beta2_decay", "d", "weight_decay"), flags=("maximize", "foreach"))
    return cls, {**ctx.lr_kwargs(), **extra}


# --- registry ----------------------------------------------------------------------------------

_REGISTRY: dict[str, OptimizerFactory] = {
    "adamw_torch": _adamw_torch,
    "adamw_torch_fused": _adamw_torch_fused,
    "adam": _adam,
    "sgd": _sgd,
    "adagrad": _adagrad,
    "rmsprop": _rmsprop,
    "adafactor": _adafactor,
}


class _RegistryView(Mapping[str, OptimizerFactory]):
    """Read-only view of the registry that registers transformers' package-served names on first
    read: their factories (GaLore, APOLLO, bitsandbytes, torchao...) load only when asked for."""

    def __getitem__(self, key: str) -> OptimizerFactory:
        return _registry()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(_registry())

    def __len__(self) -> int:
        return len(_registry())


OPTIMIZERS: Mapping[str, OptimizerFactory] = _RegistryView()
"""Read-only view of the registry (name → factory); change it with :func:`register_optimizer`."""


def register_optimizer(name: Any, factory: OptimizerFactory, *, overwrite: bool = False) -> OptimizerFactory:
    """Make ``optim=name`` build whatever ``factory(ctx)`` returns; returns the factory.

    Replacing an existing name (built-ins included) needs ``overwrite=True`` so that two libraries
    cannot silently take the same name.
    """
    key = name_of(name)
    if not key:
        raise ValueError("an optimizer name must be a non-empty string")
    if not callable(factory):
        raise TypeError(f"the factory for optimizer {key!r} must be callable, got {type(factory).__name__}")
    if key in _registry() and not overwrite:
        raise ValueError(f"optimizer {key!r} is already registered; pass overwrite=True to replace it")
    _REGISTRY[key] = factory
    return factory


def unregister_optimizer(name: Any) -> OptimizerFactory:
    """Remove a name (e.g. one a test registered) and return its factory."""
    key = name_of(name)
    if key not in _registry():
        raise unknown_name_error("optimizer", key, _REGISTRY)
    return _REGISTRY.pop(key)


def unknown_name_error(kind: str, name: str, registered: Iterable[str]) -> ValueError:
    """A ValueError naming ``name``, the closest registered names and the whole list."""
    names = sorted(registered)
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return ValueError(
        f"Unknown {kind} {name!r}.{hint} Registered {kind}s: {', '.join(names)}. "
        f"Add your own with register_{kind}(name, factory)."
    )


def get_optimizer_cls_and_kwargs(args: Any, model: nn.Module | None = None) -> tuple[OptimizerBuilder, dict[str, Any]]:
    """``(class, kwargs)`` for ``args.optim``, like ``transformers.Trainer.get_optimizer_cls_and_kwargs``.

    ``args`` needs ``optim``, ``learning_rate``, ``adam_beta1``, ``adam_beta2``, ``adam_epsilon`` and may
    have ``optim_args``; a transformers or statetrain ``TrainingArguments`` or a ``SimpleNamespace`` all do.
    The kwargs are a fresh dict each call, so the caller may pop from it.
    """
    key = name_of(args.optim)
    # a built-in name needs no import of the package-served ones; any other name loads them first
    factory = _REGISTRY.get(key) or _registry().get(key)
    if factory is None:
        raise unknown_name_error("optimizer", key, _REGISTRY)
    ctx = OptimizerContext(
        name=key, args=args, model=model, optim_args=parse_optim_args(getattr(args, "optim_args", None))
    )
    cls, kwargs = factory(ctx)
    return cls, dict(kwargs)


_package_names_registered = False


def _registry() -> dict[str, OptimizerFactory]:
    """The registry, with transformers' names served by other packages (bitsandbytes, torchao,
    schedulefree...) added the first time it is read whole; a name registered before keeps its factory."""
    global _package_names_registered
    if not _package_names_registered:
        from statetrain.optim.package_optimizers import PACKAGE_OPTIMIZERS

        for key, factory in PACKAGE_OPTIMIZERS.items():
            _REGISTRY.setdefault(key, factory)
        _package_names_registered = True
    return _REGISTRY
