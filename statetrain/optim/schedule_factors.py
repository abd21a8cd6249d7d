"""The step → learning-rate factor functions behind the step-driven schedules in ``schedulers.py``.

Each is bound with ``functools.partial`` and handed to ``LambdaLR``. The keywords are transformers'
own (``num_warmup_steps``, ``num_training_steps``, ``min_lr_rate``...), so code that inspects a
schedule's ``lr_lambdas[0].keywords`` (HF's tests do) sees the same names and values as with HF.
"""

from __future__ import annotations

import math


def _ramp(step: int, warmup: int) -> float:
    """Linear warmup from 0: the factor during the first ``warmup`` steps of most HF schedules."""
    return float(step) / float(max(1, warmup))


def constant_factor(step: int) -> float:
    return 1.0


def constant_with_warmup_factor(step: int, *, num_warmup_steps: int) -> float:
    return _ramp(step, num_warmup_steps) if step < num_warmup_steps else 1.0


def linear_factor(step: int, *, num_warmup_steps: int, num_training_steps: int) -> float:
    warmup, total = num_warmup_steps, num_training_steps
    if step < warmup:
        return _ramp(step, warmup)
    return max(0.0, float(total - step) / float(max(1, total - warmup)))


def _progress(step: int, warmup: int, total: int) -> float:
    """Fraction of the post-warmup span already done (may exceed 1 after ``total``)."""
    return float(step - warmup) / float(max(1, total - warmup))


def cosine_factor(
    step: int, *, num_warmup_steps: int, num_training_steps: int, num_cycles: float, min_lr_rate: float = 0.0
) -> float:
    """Cosine from 1 towards ``min_lr_rate`` (a fraction of the initial lr), clipped at 0."""
    warmup, total = num_warmup_steps, num_training_steps
    if step < warmup:
        return _ramp(step, warmup)
    wave = 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * _progress(step, warmup, total)))
    return max(0.0, wave * (1.0 - min_lr_rate) + min_lr_rate)


def cosine_restarts_factor(step: int, *, num_warmup_steps: int, num_training_steps: int, num_cycles: float) -> float:
    warmup, total = num_warmup_steps, num_training_steps
    if step < warmup:
        return _ramp(step, warmup)
    done = _progress(step, warmup, total)
    if done >= 1.0:
        return 0.0
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * ((float(num_cycles) * done) % 1.0))))


def polynomial_factor(
    step: int, *, num_warmup_steps: int, num_training_steps: int, lr_init: float, lr_end: float, power: float
) -> float:
    """Polynomial decay from ``lr_init`` to ``lr_end``, as a factor of ``lr_init``.

    transformers divides by ``total - warmup`` even when that is 0 (a ZeroDivisionError at
    ``step == total``); here the schedule has simply ended and the factor is ``lr_end / lr_init``.
    """
    warmup, total = num_warmup_steps, num_training_steps
    if step < warmup:
        return _ramp(step, warmup)
    span = total - warmup
    if step > total or span == 0:
        return lr_end / lr_init
    remaining = 1.0 - (step - warmup) / span
    return ((lr_init - lr_end) * remaining**power + lr_end) / lr_init


def inverse_sqrt_factor(step: int, *, num_warmup_steps: int, timescale: float) -> float:
    if step < num_warmup_steps:
        return _ramp(step, num_warmup_steps)
    return 1.0 / math.sqrt((step + timescale - num_warmup_steps) / timescale)


def cosine_warmup_min_lr_factor(
    step: int,
    *,
    num_warmup_steps: int,
    num_training_steps: int,
    num_cycles: float,
    min_lr_rate: float,
    warmup_lr_rate: float | None,
) -> float:
    """HF's ``cosine_warmup_with_min_lr``: warmup and progress are shifted one step ahead of ``cosine``."""
    s, w, t = float(step), float(num_warmup_steps), float(num_training_steps)
    if s < w:
        if warmup_lr_rate is None:
            return (s + 1.0) / max(1.0, w)
        start = float(warmup_lr_rate)
        return start + (1.0 - start) * s / max(1, w - 1)
    done = (s - w + 1.0) / max(1.0, t - w)
    wave = 0.5 * (1.0 + math.cos(math.pi * num_cycles * 2.0 * done))
    return max(0.0, wave * (1.0 - min_lr_rate) + min_lr_rate)


def _shape(kind: str, progress: float, *, rising: bool, num_cycles: float) -> float:
    """The WSD warmup (rising) or decay curve at ``progress`` in [0, 1)."""
    if rising:
        if kind == "linear":
            return progress
        if kind == "cosine":
            return 0.5 * (1.0 - math.cos(math.pi * progress))
        return 1.0 - math.sqrt(1.0 - progress)
    if kind == "linear":
        return 1.0 - progress
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress))
    return 1.0 - math.sqrt(progress)


def wsd_factor(
    step: int,
    *,
    num_warmup_steps: int,
    num_stable_steps: int,
    num_decay_steps: int,
    warmup_type: str,
    decay_type: str,
    min_lr_ratio: float,
    num_cycles: float,
) -> float:
    warmup, stable, decay = num_warmup_steps, num_stable_steps, num_decay_steps
    if step < warmup:
        curve = _shape(warmup_type, _ramp(step, warmup), rising=True, num_cycles=num_cycles)
    elif step < warmup + stable:
        return 1.0
    elif step < warmup + stable + decay:
        done = float(step - warmup - stable) / float(max(1, decay))
        curve = _shape(decay_type, done, rising=False, num_cycles=num_cycles)
    else:
        return min_lr_ratio
    return max(0.0, curve * (1.0 - min_lr_ratio) + min_lr_ratio)
