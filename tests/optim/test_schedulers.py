"""statetrain's scheduler registry against ``transformers.get_scheduler``, step by step."""

from __future__ import annotations

import io
import math
import pickle
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch.optim.lr_scheduler import LambdaLR, ReduceLROnPlateau

from statetrain.optim import schedulers
from statetrain.optim.schedulers import (
    SCHEDULERS,
    SchedulerArgumentError,
    get_scheduler,
    register_scheduler,
    unregister_scheduler,
)

BASE_LR = 0.37
# (warmup, total): no warmup, ordinary, warmup == total, warmup > total, one step, an empty run.
STEP_COMBOS = [(0, 10), (3, 10), (4, 17), (10, 10), (12, 10), (0, 1), (1, 1), (0, 0)]

# Each name with the lr_scheduler_kwargs variants compared; {} means HF's defaults.
KWARG_VARIANTS: dict[str, list[dict[str, Any]]] = {
    "linear": [{}],
    "cosine": [{}, {"num_cycles": 1.5}, {"num_cycles": 0.25}],
    "cosine_with_restarts": [{}, {"num_cycles": 3}, {"num_cycles": 2.5}],
    "polynomial": [{}, {"power": 2.0}, {"power": 0.5, "lr_end": 0.05}, {"lr_end": 0.0, "power": 3}],
    "constant": [{}],
    "constant_with_warmup": [{}],
    "inverse_sqrt": [{}, {"timescale": 7}, {"timescale": 2.5}],
    "cosine_with_min_lr": [
        {"min_lr": 0.01},
        {"min_lr_rate": 0.1},
        {"min_lr_rate": 0.2, "num_cycles": 1.0},
    ],
    "cosine_warmup_with_min_lr": [
        {"min_lr": 0.01},
        {"min_lr_rate": 0.1, "warmup_lr_rate": 0.05},
        {"min_lr_rate": 0.0, "num_cycles": 1.0},
    ],
    "warmup_stable_decay": [
        {"num_decay_steps": 3},
        {"num_decay_steps": 4, "decay_type": "linear", "min_lr_ratio": 0.1},
        {"num_decay_steps": 2, "warmup_type": "cosine", "decay_type": "1-sqrt"},
        {"num_decay_steps": 5, "warmup_type": "1-sqrt", "num_cycles": 1.0, "min_lr_ratio": 0.05},
        {"num_decay_steps": 3, "num_stable_steps": 2, "decay_type": "cosine"},
        {"num_decay_steps": 0},
        {"num_decay_steps": 14},  # longer than most runs: HF's plateau length goes negative
    ],
}
STEP_DRIVEN = sorted(KWARG_VARIANTS)


def hf() -> Any:
    """transformers, or a skip: it is a dev dependency and only the comparisons need it."""
    return pytest.importorskip("transformers")


def optimizer(lr: float = BASE_LR) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=lr)


def lrs(scheduler: Any, opt: torch.optim.Optimizer, steps: int) -> Iterator[float]:
    """The lr in effect before each of ``steps`` scheduler steps (and after the last)."""
    for _ in range(steps):
        yield opt.param_groups[0]["lr"]
        opt.step()
        scheduler.step()
    yield opt.param_groups[0]["lr"]


def hf_lrs(name: str, warmup: int, total: int, kwargs: dict[str, Any]) -> list[float] | None:
    """HF's lr sequence, or None where HF itself crashes (polynomial with warmup == total)."""
    opt = optimizer()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            sched = hf().get_scheduler(
                name, opt, num_warmup_steps=warmup, num_training_steps=total, scheduler_specific_kwargs=dict(kwargs)
            )
            return list(lrs(sched, opt, total + 3))
        except ZeroDivisionError:
            return None


def our_lrs(name: str, warmup: int, total: int, kwargs: dict[str, Any]) -> list[float]:
    opt = optimizer()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sched = get_scheduler(
            name, opt, num_warmup_steps=warmup, num_training_steps=total, scheduler_specific_kwargs=dict(kwargs)
        )
    assert isinstance(sched, LambdaLR)
    return list(lrs(sched, opt, total + 3))


def same_lr(ours: float, theirs: float) -> bool:
    # 1e-12 relative; the absolute floor only covers values that are 0 in one and ~1e-17 in the other.
    return math.isclose(ours, theirs, rel_tol=1e-12, abs_tol=1e-15 * BASE_LR)


def test_every_hf_step_driven_scheduler_is_registered() -> None:
    hf_names = {t.value for t in hf().SchedulerType}
    # greedy is transformers' own metric-driven class, used as is; plateau is compared separately.
    assert set(SCHEDULERS) == hf_names
    assert set(STEP_DRIVEN) == set(SCHEDULERS) - {"reduce_lr_on_plateau", "greedy"}


@pytest.mark.parametrize("name", STEP_DRIVEN)
def test_lr_matches_transformers_at_every_step(name: str) -> None:
    compared = 0
    for kwargs in KWARG_VARIANTS[name]:
        for warmup, total in STEP_COMBOS:
            theirs = hf_lrs(name, warmup, total, kwargs)
            ours = our_lrs(name, warmup, total, kwargs)
            if theirs is None:
                assert name == "polynomial" and warmup == total
                continue
            assert len(ours) == len(theirs) == total + 4
            for step, (a, b) in enumerate(zip(ours, theirs, strict=True)):
                assert same_lr(a, b), f"{name} {kwargs} warmup={warmup} total={total} step={step}: {a} != {b}"
            compared += 1
    assert compared >= len(KWARG_VARIANTS[name]) * (len(STEP_COMBOS) - 3)


def test_scheduler_type_enums_are_accepted() -> None:
    ours = our_lrs(hf().SchedulerType.COSINE, 2, 6, {})  # type: ignore[arg-type]
    assert ours == our_lrs("cosine", 2, 6, {})


def test_polynomial_where_transformers_divides_by_zero_ends_at_lr_end() -> None:
    got = our_lrs("polynomial", 4, 4, {"lr_end": 0.01})
    assert got[:4] == pytest.approx([BASE_LR * s / 4 for s in range(4)])
    assert got[4:] == pytest.approx([0.01] * 4)


PLATEAU_METRICS = [1.0, 0.9, 0.9, 0.95, 0.91, 0.899, 0.95, 0.96, 0.97, 0.5, 0.5, 0.5, 0.6, 0.4, 0.4, 0.41, 0.42, 0.43]


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"factor": 0.5, "patience": 1},
        {"mode": "max", "patience": 0, "threshold": 0.01, "threshold_mode": "abs", "cooldown": 1, "min_lr": 0.05},
        {"factor": 0.3, "patience": 2, "threshold": 0.05, "eps": 1e-3},
    ],
)
def test_reduce_lr_on_plateau_matches_transformers(kwargs: dict[str, Any]) -> None:
    hf_opt, our_opt = optimizer(), optimizer()
    theirs = hf().get_scheduler(
        "reduce_lr_on_plateau", hf_opt, num_warmup_steps=3, num_training_steps=20, scheduler_specific_kwargs=kwargs
    )
    ours = get_scheduler(
        "reduce_lr_on_plateau", our_opt, num_warmup_steps=3, num_training_steps=20, scheduler_specific_kwargs=kwargs
    )
    assert type(ours) is ReduceLROnPlateau is type(theirs)
    seen = set()
    for metric in PLATEAU_METRICS:
        theirs.step(metric)
        ours.step(metric)
        seen.add(our_opt.param_groups[0]["lr"])
        assert our_opt.param_groups[0]["lr"] == hf_opt.param_groups[0]["lr"]
    if kwargs:
        assert len(seen) > 1, "the metric sequence should make the lr drop at least once"


def test_lambda_schedules_save_and_resume_without_pickling_functions() -> None:
    for name in STEP_DRIVEN:
        kwargs = KWARG_VARIANTS[name][-1]
        opt = optimizer()
        sched = get_scheduler(name, opt, 2, 9, kwargs)
        for _ in range(4):
            opt.step()
            sched.step()
        state = sched.state_dict()
        buffer = io.BytesIO()
        torch.save(state, buffer)
        buffer.seek(0)
        restored_state = torch.load(buffer, weights_only=True)  # plain data only
        pickle.loads(pickle.dumps(sched))  # the factor functions are module-level partials

        fresh_opt = optimizer()
        fresh = get_scheduler(name, fresh_opt, 2, 9, kwargs)
        fresh.load_state_dict(restored_state)
        assert fresh.get_last_lr() == sched.get_last_lr()
        for _ in range(5):
            opt.step()
            fresh_opt.step()
            sched.step()
            fresh.step()
            assert fresh.get_last_lr() == sched.get_last_lr(), name


# --- argument errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "warmup", "total", "kwargs", "missing"),
    [
        ("linear", None, 10, {}, "num_warmup_steps"),
        ("cosine", 2, None, {}, "num_training_steps"),
        ("polynomial", 2, None, {}, "num_training_steps"),
        ("constant_with_warmup", None, 10, {}, "num_warmup_steps"),
        ("inverse_sqrt", None, None, {}, "num_warmup_steps"),
        ("warmup_stable_decay", 2, 10, {}, "num_decay_steps"),
        ("warmup_stable_decay", 2, None, {"num_decay_steps": 2}, "num_stable_steps"),
        ("cosine_with_min_lr", 2, 10, {}, "min_lr_rate"),
        ("cosine_warmup_with_min_lr", 2, 10, {}, "min_lr"),
    ],
)
def test_missing_arguments_are_named(
    name: str, warmup: int | None, total: int | None, kwargs: dict[str, Any], missing: str
) -> None:
    with pytest.raises(ValueError, match=missing):
        get_scheduler(name, optimizer(), warmup, total, kwargs)
    # transformers refuses the same configurations (ValueError or TypeError).
    with pytest.raises((ValueError, TypeError)):
        hf().get_scheduler(name, optimizer(), warmup, total, kwargs)


def test_scheduler_argument_error_is_also_a_type_error_like_hf() -> None:
    with pytest.raises(TypeError, match=r"num_cyclez.*accepts \['last_epoch', 'num_cycles'\]"):
        get_scheduler("cosine", optimizer(), 1, 5, {"num_cyclez": 2})
    with pytest.raises(SchedulerArgumentError, match="factr"):
        get_scheduler("reduce_lr_on_plateau", optimizer(), 1, 5, {"factr": 0.5})
    with pytest.raises(SchedulerArgumentError, match="num_training_steps"):
        get_scheduler("warmup_stable_decay", optimizer(), 1, 5, {"num_training_steps": 4, "num_decay_steps": 1})


def test_invalid_values_are_refused() -> None:
    with pytest.raises(ValueError, match="lr_end"):
        get_scheduler("polynomial", optimizer(0.01), 0, 5, {"lr_end": 0.01})
    with pytest.raises(ValueError, match="not both"):
        get_scheduler("cosine_with_min_lr", optimizer(), 0, 5, {"min_lr": 0.1, "min_lr_rate": 0.1})
    with pytest.raises(ValueError, match="decay_type"):
        get_scheduler("warmup_stable_decay", optimizer(), 0, 5, {"num_decay_steps": 1, "decay_type": "exp"})
    with pytest.raises(ValueError, match="timescale"):
        get_scheduler("inverse_sqrt", optimizer(), 0, 5, {"timescale": 0})


def test_wsd_with_both_total_and_stable_steps_warns_like_hf() -> None:
    with pytest.warns(UserWarning, match="num_stable_steps"):
        get_scheduler("warmup_stable_decay", optimizer(), 1, 8, {"num_decay_steps": 2, "num_stable_steps": 3})


def test_constant_schedules_ignore_kwargs_like_hf(caplog: pytest.LogCaptureFixture) -> None:
    for name in ("constant", "constant_with_warmup"):
        sched = get_scheduler(name, optimizer(), 2, 5, {"num_cycles": 3})
        assert isinstance(sched, LambdaLR)
        hf().get_scheduler(name, optimizer(), 2, 5, {"num_cycles": 3})  # HF does not raise either
    assert "ignoring ['num_cycles']" in caplog.text


def test_unknown_name_suggests_the_closest() -> None:
    with pytest.raises(ValueError, match=r"Unknown scheduler 'cosin'\. Did you mean 'cosine'.*Registered schedulers"):
        get_scheduler("cosin", optimizer(), 0, 5)
    with pytest.raises(ValueError, match="greedy"):
        get_scheduler("greedyy", optimizer(), 0, 5)


# --- extension -----------------------------------------------------------------------------------


def _halving_factor(step: int, *, every: int) -> float:
    return 0.5 ** (step // every)


def halving_schedule(
    optimizer: torch.optim.Optimizer,
    num_warmup_steps: int | None = None,
    num_training_steps: int | None = None,
    *,
    every: int = 2,
) -> LambdaLR:
    from functools import partial

    return LambdaLR(optimizer, partial(_halving_factor, every=every))


def test_registered_scheduler_works_end_to_end() -> None:
    register_scheduler("halving", halving_schedule)
    try:
        assert SCHEDULERS["halving"] is halving_schedule
        with pytest.raises(ValueError, match="already registered"):
            register_scheduler("halving", halving_schedule)
        opt = optimizer(1.0)
        sched = get_scheduler("halving", opt, 0, 10, {"every": 3})
        assert list(lrs(sched, opt, 7)) == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25]
        with pytest.raises(SchedulerArgumentError, match=r"evry.*accepts \['every'\]"):
            get_scheduler("halving", optimizer(), 0, 10, {"evry": 3})
    finally:
        unregister_scheduler("halving")
    assert "halving" not in SCHEDULERS
    with pytest.raises(TypeError):
        SCHEDULERS["x"] = halving_schedule  # type: ignore[index]


def test_builtins_can_be_replaced_only_on_purpose() -> None:
    original = SCHEDULERS["linear"]
    with pytest.raises(ValueError, match="overwrite=True"):
        register_scheduler("linear", halving_schedule)
    register_scheduler("linear", halving_schedule, overwrite=True)
    try:
        assert schedulers.SCHEDULERS["linear"] is halving_schedule
    finally:
        register_scheduler("linear", original, overwrite=True)
