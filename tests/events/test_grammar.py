"""The hand-written HF event grammar: legal traces pass, each kind of violation is named precisely.

The last tests validate the grammar against ``transformers.Trainer`` itself: whatever HF emits for
a handful of configurations (short windows, ``max_steps``, epoch logging, stop flags that break a
window) must be accepted.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from statetrain import Event
from statetrain.testing.grammar import HF_EVENT_NAMES, GrammarError, check_trace, hf_events_only
from statetrain.testing.nesting import DEFAULT_STATE_EVENTS, check_state_nesting
from statetrain.testing.recorder import TraceRecorder

Trace = list[tuple[str, int, float]]


def build(
    n: int = 5,
    ga: int = 2,
    epochs: int = 1,
    max_steps: int | None = None,
    log: Callable[[int], bool] = lambda step: True,
    epoch_log: bool = False,
    init: bool = True,
) -> Trace:
    """A legal trace: ``n`` micro-batches per epoch, windows of ``ga`` (the last one shorter)."""
    windows = [ga] * (n // ga) + ([n % ga] if n % ga else [])
    total = max_steps if max_steps is not None else epochs * len(windows)
    trace: Trace = [("on_init_end", 0, 0.0)] if init else []
    step, epoch, last_logged = 0, 0.0, 0
    trace.append(("on_train_begin", step, epoch))
    for e in range(math.ceil(total / len(windows))):
        trace.append(("on_epoch_begin", step, epoch))
        k = 0
        for size in windows:
            trace.append(("on_step_begin", step, epoch))
            for _ in range(size - 1):
                k += 1
                trace.append(("on_substep_end", step, epoch))
            k += 1
            trace += [("on_pre_optimizer_step", step, epoch), ("on_optimizer_step", step, epoch)]
            step, epoch = step + 1, e + k / n
            trace.append(("on_step_end", step, epoch))
            if log(step):
                trace.append(("on_log", step, epoch))
                last_logged = step
            if step >= total:
                break
        trace.append(("on_epoch_end", step, epoch))
        if epoch_log and step > last_logged:
            trace.append(("on_log", step, epoch))
            last_logged = step
    trace += [("on_log", step, epoch), ("on_train_end", step, epoch)]
    return trace


def index(trace: Trace, name: str, occurrence: int = 0) -> int:
    return [i for i, entry in enumerate(trace) if entry[0] == name][occurrence]


def edit(
    trace: Trace, position: int, *, name: str | None = None, step: int | None = None, epoch: float | None = None
) -> Trace:
    old = trace[position]
    new = (
        name if name is not None else old[0],
        step if step is not None else old[1],
        epoch if epoch is not None else old[2],
    )
    return [*trace[:position], new, *trace[position + 1 :]]


def without(trace: Trace, position: int) -> Trace:
    return [*trace[:position], *trace[position + 1 :]]


def with_step_epochs(trace: Trace, epoch_of_step: Callable[[int], float]) -> Trace:
    """The same trace with ``epoch`` set to ``epoch_of_step(global_step)`` from each on_step_end on."""
    out: Trace = []
    current = 0.0
    for name, step, _ in trace:
        if name == "on_step_end":
            current = epoch_of_step(step)
        out.append((name, step, current))
    return out


def error(trace: Any, **kwargs: Any) -> GrammarError:
    with pytest.raises(GrammarError) as info:
        check_trace(trace, **kwargs)
    return info.value


# --- legal traces -------------------------------------------------------------------------------


def test_reference_example_without_eval_and_save_passes() -> None:
    # Reference §1.2: 5 micro-batches, GA=2, max_steps=3, log every step.
    trace = build(n=5, ga=2, max_steps=3)
    names = [e[0] for e in trace]
    assert names == [
        "on_init_end", "on_train_begin", "on_epoch_begin",
        "on_step_begin", "on_substep_end", "on_pre_optimizer_step", "on_optimizer_step", "on_step_end", "on_log",
        "on_step_begin", "on_substep_end", "on_pre_optimizer_step", "on_optimizer_step", "on_step_end", "on_log",
        "on_step_begin", "on_pre_optimizer_step", "on_optimizer_step", "on_step_end", "on_log",
        "on_epoch_end", "on_log", "on_train_end",
    ]  # fmt: skip
    check_trace(trace)
    check_trace(trace, steps_in_epoch=5, gradient_accumulation_steps=2)


@pytest.mark.parametrize(
    "options",
    [
        dict(n=5, ga=2, epochs=3),
        dict(n=6, ga=3, epochs=2, log=lambda s: s % 2 == 0),
        dict(n=7, ga=1, epochs=2, log=lambda s: False),
        dict(n=1, ga=4, epochs=3),
        dict(n=9, ga=4, max_steps=7, log=lambda s: s == 1, epoch_log=True),
        dict(n=5, ga=2, epochs=2, log=lambda s: False, epoch_log=True),
        dict(n=4, ga=2, epochs=2, init=False),
    ],
)
def test_generated_legal_traces_pass(options: dict[str, Any]) -> None:
    trace = build(**options)
    check_trace(trace)
    check_trace(trace, steps_in_epoch=options["n"], gradient_accumulation_steps=options["ga"])


def test_event_members_and_lists_are_accepted() -> None:
    trace = [(Event(name), step, epoch) for name, step, epoch in build()]
    check_trace(trace)
    check_trace([list(e) for e in build()])


def test_epoch_log_then_summary_log() -> None:
    trace = build(n=4, ga=2, epochs=1, log=lambda s: False, epoch_log=True)
    assert [e[0] for e in trace[-3:]] == ["on_log", "on_log", "on_train_end"]
    check_trace(trace)


def test_stop_flag_breaks_a_window_and_the_next_epoch_goes_on() -> None:
    # As transformers 5.24 records it: should_epoch_stop set at the 2nd on_substep_end, GA=3, n=5.
    trace: Trace = [
        ("on_init_end", 0, 0.0), ("on_train_begin", 0, 0.0), ("on_epoch_begin", 0, 0.0),
        ("on_step_begin", 0, 0.0), ("on_substep_end", 0, 0.0), ("on_substep_end", 0, 0.0),
        ("on_epoch_end", 0, 0.0),
        ("on_epoch_begin", 0, 0.0),
        ("on_step_begin", 0, 0.0), ("on_substep_end", 0, 0.0), ("on_substep_end", 0, 0.0),
        ("on_pre_optimizer_step", 0, 0.0), ("on_optimizer_step", 0, 0.0), ("on_step_end", 1, 1.6), ("on_log", 1, 1.6),
        ("on_step_begin", 1, 1.6), ("on_substep_end", 1, 1.6),
        ("on_pre_optimizer_step", 1, 1.6), ("on_optimizer_step", 1, 1.6), ("on_step_end", 2, 2.0), ("on_log", 2, 2.0),
        ("on_epoch_end", 2, 2.0), ("on_log", 2, 2.0), ("on_train_end", 2, 2.0),
    ]  # fmt: skip
    check_trace(trace)
    check_trace(trace, steps_in_epoch=5, gradient_accumulation_steps=3)


def test_training_stop_in_the_first_window_leaves_no_step() -> None:
    trace: Trace = [
        ("on_train_begin", 0, 0.0), ("on_epoch_begin", 0, 0.0), ("on_step_begin", 0, 0.0),
        ("on_substep_end", 0, 0.0), ("on_epoch_end", 0, 0.0), ("on_log", 0, 0.0), ("on_train_end", 0, 0.0),
    ]  # fmt: skip
    check_trace(trace)


def test_two_train_calls_in_one_trace() -> None:
    check_trace(build(n=3, ga=2) + build(n=3, ga=2, init=False))


def test_resumed_runs() -> None:
    # resumed mid-epoch 1 (epoch 1.4 = 1 + 2/5): windows of 2 go on, then the short one.
    trace: Trace = [
        ("on_train_begin", 3, 1.4), ("on_epoch_begin", 3, 1.4),
        ("on_step_begin", 3, 1.4), ("on_substep_end", 3, 1.4),
        ("on_pre_optimizer_step", 3, 1.4), ("on_optimizer_step", 3, 1.4), ("on_step_end", 4, 1.8),
        ("on_step_begin", 4, 1.8), ("on_pre_optimizer_step", 4, 1.8), ("on_optimizer_step", 4, 1.8),
        ("on_step_end", 5, 2.0), ("on_log", 5, 2.0),
        ("on_epoch_end", 5, 2.0), ("on_log", 5, 2.0), ("on_train_end", 5, 2.0),
    ]  # fmt: skip
    check_trace(trace)
    check_trace(trace, steps_in_epoch=5, gradient_accumulation_steps=2)
    # resuming a finished run trains no epoch at all (HF's epoch range is empty)
    check_trace([("on_train_begin", 6, 2.0), ("on_log", 6, 2.0), ("on_train_end", 6, 2.0)])


# --- structure violations -----------------------------------------------------------------------


def test_error_is_a_value_error_with_position_and_expected() -> None:
    trace = without(build(), index(build(), "on_epoch_end"))
    err = error(trace)
    assert isinstance(err, ValueError)
    assert err.position == index(build(), "on_epoch_end")
    assert set(err.expected) == {"on_epoch_end", "on_step_begin"}
    assert f"trace[{err.position}]" in str(err) and "unexpected 'on_log'" in str(err)
    assert ">>[" in str(err)  # the excerpt marks the offending entry


def test_empty_trace() -> None:
    assert "trace ended after nothing: expected 'on_train_begin'" in str(error([]))


def test_missing_train_begin() -> None:
    err = error(without(build(), 1))
    assert err.position == 1 and "unexpected 'on_epoch_begin'" in str(err)
    assert "'on_train_begin'" in str(err)


def test_step_outside_an_epoch() -> None:
    trace = without(build(), 2)
    err = error(trace)
    assert err.position == 2 and "unexpected 'on_step_begin'" in str(err)
    assert "expected 'on_epoch_begin'" in str(err) and "fresh run" in str(err)


def test_missing_epoch_end_between_epochs() -> None:
    trace = build(n=2, ga=2, epochs=2, log=lambda s: False)
    position = index(trace, "on_epoch_end")
    err = error(without(trace, position))
    assert err.position == position and "unexpected 'on_epoch_begin'" in str(err)
    assert "epoch 0" in str(err)


def test_optimizer_step_without_pre_optimizer_step() -> None:
    trace = build()
    position = index(trace, "on_pre_optimizer_step")
    err = error(without(trace, position))
    assert err.position == position and "unexpected 'on_optimizer_step'" in str(err)
    assert "'on_pre_optimizer_step'" in str(err) and "window 1" in str(err)


def test_substep_end_after_the_optimizer_step() -> None:
    trace = build(n=4, ga=2, log=lambda s: False)
    position = index(trace, "on_step_end") + 1
    trace = [*trace[:position], ("on_substep_end", 1, 0.5), *trace[position:]]
    err = error(trace)
    assert err.position == position and "unexpected 'on_substep_end'" in str(err)


def test_window_without_substep_cannot_be_broken() -> None:
    # GA=1: the only micro-batch closes the window, so on_epoch_end cannot interrupt it.
    trace: Trace = [
        ("on_train_begin", 0, 0.0),
        ("on_epoch_begin", 0, 0.0),
        ("on_step_begin", 0, 0.0),
        ("on_epoch_end", 0, 0.0),
        ("on_log", 0, 0.0),
        ("on_train_end", 0, 0.0),
    ]
    err = error(trace)
    assert err.position == 3 and "expected 'on_pre_optimizer_step' or 'on_substep_end'" in str(err)


def test_broken_window_must_end_the_epoch() -> None:
    trace: Trace = [
        ("on_train_begin", 0, 0.0),
        ("on_epoch_begin", 0, 0.0),
        ("on_step_begin", 0, 0.0),
        ("on_substep_end", 0, 0.0),
        ("on_step_begin", 0, 0.0),
    ]
    err = error(trace)
    assert err.position == 4 and "'on_epoch_end'" in str(err) and "stop flag" in str(err)


def test_missing_summary_log() -> None:
    trace = without(build(), len(build()) - 2)
    err = error(trace)
    # the epoch log slot takes the lone on_log only if something other than on_train_end follows
    assert err.position == len(trace) - 1 and "unexpected 'on_train_end'" in str(err)


def test_trace_that_stops_early() -> None:
    trace = build()[:-1]
    err = error(trace)
    assert err.position == len(trace) and "trace ended after" in str(err)
    assert "'on_train_end'" in str(err)


def test_train_end_right_after_a_step() -> None:
    trace = build()
    position = index(trace, "on_epoch_end")
    err = error([*trace[:position], trace[-1]])
    assert err.position == position and "unexpected 'on_train_end'" in str(err)
    assert "'on_epoch_end'" in str(err)


def test_events_outside_the_training_grammar_are_named() -> None:
    trace = build()
    position = index(trace, "on_step_end") + 1
    err = error([*trace[:position], ("on_predict", 1, 0.4), *trace[position:]])
    assert err.position == position and "not an event of the training grammar" in str(err)


def test_init_end_only_first() -> None:
    trace = build()
    err = error([*trace[:3], ("on_init_end", 0, 0.0), *trace[3:]])
    assert err.position == 3 and "unexpected 'on_init_end'" in str(err)


@pytest.mark.parametrize(
    "entry",
    [("on_log", 0), "on_log", ("on_log", "0", 0.0), ("on_log", True, 0.0), ("on_log", 0, "x"), (3, 0, 0.0)],
)
def test_malformed_entries(entry: Any) -> None:
    err = error([("on_train_begin", 0, 0.0), entry])
    assert err.position == 1 and "trace[1]" in str(err)


# --- value violations ---------------------------------------------------------------------------


def test_global_step_must_grow_by_one_at_step_end() -> None:
    trace = build(n=4, ga=1, log=lambda s: False)
    position = index(trace, "on_step_end", 1)
    err = error(edit(trace, position, step=3))
    assert err.position == position and "expected 2, got 3" in str(err)


def test_global_step_must_not_change_elsewhere() -> None:
    trace = build(n=4, ga=2)
    position = index(trace, "on_substep_end", 1)
    err = error(edit(trace, position, step=2))
    assert err.position == position and "global_step changed from 1 to 2 at on_substep_end" in str(err)


def test_epoch_must_not_change_elsewhere() -> None:
    trace = build(n=4, ga=2)
    position = index(trace, "on_step_begin", 1)
    err = error(edit(trace, position, epoch=0.75))
    assert err.position == position and "epoch changed from 0.5 to 0.75 at on_step_begin" in str(err)


def test_epoch_at_step_end_must_be_micro_batches_over_n() -> None:
    trace = build(n=5, ga=2, log=lambda s: False)
    position = index(trace, "on_step_end")
    err = error(edit(trace, position, epoch=0.5), steps_in_epoch=5)
    assert err.position == position and "epoch must be 0.4" in str(err) and "2/5" in str(err)


def test_epoch_counting_optimizer_steps_instead_of_micro_batches_is_caught() -> None:
    # A classic bug: epoch = e + steps/steps_per_epoch. n=5, GA=2: windows 2, 2, 1 give 1/3, 2/3, 1
    # instead of 0.4, 0.8, 1; n inferred from the first step (6) does not fit the short window.
    trace = with_step_epochs(build(n=5, ga=2, log=lambda s: False), lambda step: step / 3)
    err = error(trace)
    assert err.position == index(trace, "on_step_end", 2)
    assert "epoch must be 0.8333" in str(err) and "5/6" in str(err) and "inferred at trace[" in str(err)


def test_epoch_must_grow_at_step_end() -> None:
    trace = build(n=4, ga=2, log=lambda s: False)
    position = index(trace, "on_step_end")
    err = error(edit(trace, position, epoch=0.0))
    assert err.position == position and "epoch must grow at on_step_end" in str(err)


def test_epoch_value_that_is_no_fraction_of_micro_batches() -> None:
    trace = with_step_epochs(build(n=4, ga=2, log=lambda s: False), lambda step: 0.3 * step)
    err = error(trace)
    assert err.position == index(trace, "on_step_end") and "whole number n" in str(err)


def test_substep_end_after_the_epochs_last_micro_batch() -> None:
    trace: Trace = [
        ("on_train_begin", 0, 0.0),
        ("on_epoch_begin", 0, 0.0),
        ("on_step_begin", 0, 0.0),
        ("on_substep_end", 0, 0.0),
        ("on_substep_end", 0, 0.0),
    ]
    err = error(trace, steps_in_epoch=2)
    assert err.position == 4 and "last micro-batch always closes its window" in str(err)


def test_log_needs_the_step_to_move() -> None:
    # logged at step end, then again at the epoch end of the same step
    trace = build(n=2, ga=2, epochs=2)
    position = index(trace, "on_epoch_end") + 1
    trace = [*trace[:position], ("on_log", 1, 1.0), *trace[position:]]
    err = error(trace)
    assert err.position == position and "moved since the last log (step 1)" in str(err)


def test_window_sizes_must_match_gradient_accumulation() -> None:
    trace = build(n=6, ga=3, log=lambda s: False)
    check_trace(trace, gradient_accumulation_steps=3)
    err = error(trace, gradient_accumulation_steps=2)
    assert err.position == index(trace, "on_step_begin")
    assert "holds 3 micro-batch(es); expected 2 (gradient_accumulation_steps)" in str(err)


def test_inferred_window_sizes_must_agree() -> None:
    # windows 2, 1, 2 within one epoch: only the last may be short
    trace: Trace = [("on_train_begin", 0, 0.0), ("on_epoch_begin", 0, 0.0)]
    step, k = 0, 0
    for size in (2, 1, 2):
        trace.append(("on_step_begin", step, k / 5))
        for _ in range(size - 1):
            trace.append(("on_substep_end", step, k / 5))
            k += 1
        k += 1
        trace += [("on_pre_optimizer_step", step, trace[-1][2]), ("on_optimizer_step", step, trace[-1][2])]
        step += 1
        trace.append(("on_step_end", step, k / 5))
    trace += [("on_epoch_end", step, 1.0), ("on_log", step, 1.0), ("on_train_end", step, 1.0)]
    err = error(trace)
    assert "only the last window of an epoch may be shorter" in str(err)
    assert err.position == index(trace, "on_step_begin", 1)


def test_broken_window_as_long_as_a_full_one() -> None:
    trace: Trace = [
        ("on_train_begin", 0, 0.0),
        ("on_epoch_begin", 0, 0.0),
        ("on_step_begin", 0, 0.0),
        ("on_substep_end", 0, 0.0),
        ("on_substep_end", 0, 0.0),
        ("on_epoch_end", 0, 0.0),
        ("on_log", 0, 0.0),
        ("on_train_end", 0, 0.0),
    ]
    err = error(trace, gradient_accumulation_steps=2)
    assert err.position == 2 and "broken window" in str(err)


def test_fresh_run_must_train_an_epoch() -> None:
    err = error([("on_train_begin", 0, 0.0), ("on_log", 0, 0.0), ("on_train_end", 0, 0.0)])
    assert err.position == 1 and "a fresh run trains at least one epoch" in str(err)


def test_bad_parameters() -> None:
    with pytest.raises(ValueError, match="steps_in_epoch must be >= 1"):
        check_trace(build(), steps_in_epoch=0)


# --- state nesting ------------------------------------------------------------------------------


def nested(*items: str | tuple[str, ...]) -> Trace:
    """``("init", "on_train_begin")`` is one state with its events; a bare string is an event."""
    trace: Trace = []
    for item in items:
        if isinstance(item, str):
            trace.append((item, 0, 0.0))
        else:
            state, *events = item
            trace.append((f"on_state_enter:{state}", 0, 0.0))
            trace += [(e, 0, 0.0) for e in events]
            trace.append((f"on_state_exit:{state}", 0, 0.0))
    return trace


LEGAL_NESTING = nested(
    "on_init_end",
    ("init", "on_train_begin"),
    ("epoch", "on_epoch_begin"),
    ("step", "on_step_begin"),
    (
        "accumulate",
        "on_before_forward",
        "on_after_forward",
        "on_after_loss",
        "on_before_backward",
        "on_after_backward",
        "on_substep_end",
    ),
    ("accumulate", "on_after_backward"),
    ("optimize", "on_pre_optimizer_step", "on_optimizer_step", "on_step_end"),
    ("log", "on_log"),
    ("step",),
    ("epoch_end", "on_epoch_end"),
    ("done", "on_log", "on_train_end"),
)


def nesting_error(trace: Trace, **kwargs: Any) -> GrammarError:
    with pytest.raises(GrammarError) as info:
        check_state_nesting(trace, **kwargs)
    return info.value


def test_legal_nesting_passes() -> None:
    check_state_nesting(LEGAL_NESTING)


def test_hf_events_only_keeps_the_hf_projection() -> None:
    names = [e.name for e in hf_events_only(LEGAL_NESTING)]
    assert "on_before_forward" not in names and not any(":" in n for n in names)
    assert names[:3] == ["on_init_end", "on_train_begin", "on_epoch_begin"]


def test_enter_before_the_previous_exit() -> None:
    trace = without(LEGAL_NESTING, index(LEGAL_NESTING, "on_state_exit:init"))
    err = nesting_error(trace)
    assert "state 'epoch' entered while 'init'" in str(err) and "'on_state_exit:init'" in str(err)
    assert err.position == index(trace, "on_state_enter:epoch")


def test_exit_of_another_state() -> None:
    position = index(LEGAL_NESTING, "on_state_exit:init")
    err = nesting_error(edit(LEGAL_NESTING, position, name="on_state_exit:epoch"))
    assert err.position == position and "exit of state 'epoch' but the open state is 'init'" in str(err)


def test_exit_without_enter() -> None:
    position = index(LEGAL_NESTING, "on_state_enter:init")
    err = nesting_error(without(LEGAL_NESTING, position))
    assert "'on_train_begin' fired outside every state; it belongs inside 'init'" in str(err)


def test_event_in_the_wrong_state() -> None:
    position = index(LEGAL_NESTING, "on_step_begin")
    trace = [*LEGAL_NESTING[:position], *LEGAL_NESTING[position + 1 :]]
    accumulate = index(trace, "on_before_forward")
    trace = [*trace[:accumulate], ("on_step_begin", 0, 0.0), *trace[accumulate:]]
    err = nesting_error(trace)
    assert err.position == accumulate
    assert "'on_step_begin' fired inside state 'accumulate'" in str(err) and "belongs inside 'step'" in str(err)


def test_init_end_inside_a_state() -> None:
    trace = nested(("init", "on_init_end", "on_train_begin"))
    assert "it belongs outside every state" in str(nesting_error(trace))


def test_state_never_exited() -> None:
    err = nesting_error(LEGAL_NESTING[:-1])
    assert "state 'done' entered at trace[" in str(err) and "never exited" in str(err)
    assert err.position == len(LEGAL_NESTING) - 1


def test_exception_ends_a_state_without_exit() -> None:
    trace = nested("on_init_end", ("init", "on_train_begin"))
    trace += [("on_state_enter:epoch", 0, 0.0), ("on_exception", 0, 0.0)]
    check_state_nesting(trace)
    assert "outside every state" in str(nesting_error(nested("on_exception")))


def test_unknown_state_and_custom_contract() -> None:
    trace = nested(("init", "on_train_begin"), ("warmup", "on_log"))
    assert "unknown state 'warmup'" in str(nesting_error(trace))
    check_state_nesting(trace, state_events={**DEFAULT_STATE_EVENTS, "warmup": {"on_log"}})


def test_unknown_event_in_nesting() -> None:
    assert "unknown event 'on_foo'" in str(nesting_error(nested(("init", "on_foo"))))


# --- the recorder -------------------------------------------------------------------------------


def test_recorder_records_all_sixteen_events() -> None:
    from types import SimpleNamespace

    recorder = TraceRecorder()
    state = SimpleNamespace(global_step=3, epoch=None)
    for name in HF_EVENT_NAMES:
        getattr(recorder, name)(None, state, None, model=None, logs={})
    assert recorder.names == list(HF_EVENT_NAMES) and len(set(recorder.names)) == 16
    assert recorder.trace[0] == ("on_init_end", 3, 0.0)
    assert {e.value for e in Event if e.is_hf_event} == set(HF_EVENT_NAMES)


def test_recorder_covers_every_transformers_event() -> None:
    transformers = pytest.importorskip("transformers")
    hf_names = {n for n in vars(transformers.TrainerCallback) if n.startswith("on_")}
    assert hf_names == set(HF_EVENT_NAMES)


# --- the grammar agrees with transformers.Trainer -----------------------------------------------


class StopAt(TraceRecorder):
    """Records, and sets ``flag`` at the ``at``-th ``on_substep_end`` (breaking that window)."""

    def __init__(self, flag: str, at: int) -> None:
        super().__init__()
        self.flag, self.at, self.count = flag, at, 0

    def on_substep_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        self.record("on_substep_end", state)
        self.count += 1
        if self.count == self.at:
            setattr(control, self.flag, True)
        return control


HF_CONFIGS: dict[str, tuple[int, dict[str, Any], Callable[[], TraceRecorder]]] = {
    # rows, arguments, recorder. 19 rows in batches of 4 = 5 micro-batches per epoch.
    "short-window-2-epochs": (
        19,
        dict(gradient_accumulation_steps=2, num_train_epochs=2, logging_steps=1),
        TraceRecorder,
    ),
    "max-steps-mid-epoch-first-step": (
        30,
        dict(gradient_accumulation_steps=3, max_steps=4, logging_steps=3, logging_first_step=True),
        TraceRecorder,
    ),
    "epoch-logging-3-epochs": (
        19,
        dict(gradient_accumulation_steps=3, num_train_epochs=3, logging_strategy="epoch"),
        TraceRecorder,
    ),
    "epoch-stop-breaks-a-window": (
        19,
        dict(gradient_accumulation_steps=3, num_train_epochs=2, logging_steps=1),
        lambda: StopAt("should_epoch_stop", 2),
    ),
}


@pytest.mark.parametrize("config", list(HF_CONFIGS))
def test_transformers_trainer_traces_pass_the_grammar(config: str, tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    import torch

    from tests.helpers import TinyRegressor, regression_rows

    rows, options, make_recorder = HF_CONFIGS[config]
    recorder = make_recorder()
    torch.manual_seed(0)
    trainer = transformers.Trainer(
        model=TinyRegressor(),
        args=transformers.TrainingArguments(
            output_dir=str(tmp_path),
            per_device_train_batch_size=4,
            report_to="none",
            use_cpu=True,
            save_strategy="no",
            disable_tqdm=True,
            optim="adamw_torch",
            **options,
        ),
        train_dataset=regression_rows(rows),
        callbacks=[recorder],
    )
    with contextlib.redirect_stdout(io.StringIO()):
        trainer.train()
    micro_batches = math.ceil(rows / 4)
    check_trace(recorder.trace)
    check_trace(
        recorder.trace, steps_in_epoch=micro_batches, gradient_accumulation_steps=options["gradient_accumulation_steps"]
    )
    if config == "epoch-stop-breaks-a-window":
        names = recorder.names
        broken = names.index("on_epoch_end")
        assert names[broken - 3 : broken] == ["on_step_begin", "on_substep_end", "on_substep_end"]


def test_evaluation_and_save_inside_act_on_flags() -> None:
    from statetrain.testing.grammar import check_trace

    trace = [
        ("on_train_begin", 0, 0.0),
        ("on_prediction_step", 0, 0.0),
        ("on_log", 0, 0.0),
        ("on_evaluate", 0, 0.0),  # eval_on_start
        ("on_epoch_begin", 0, 0.0),
        ("on_step_begin", 0, 0.0),
        ("on_pre_optimizer_step", 0, 0.0),
        ("on_optimizer_step", 0, 0.0),
        ("on_step_end", 1, 0.5),
        ("on_log", 1, 0.5),
        ("on_prediction_step", 1, 0.5),
        ("on_log", 1, 0.5),
        ("on_evaluate", 1, 0.5),
        ("on_save", 1, 0.5),
        ("on_step_begin", 1, 0.5),
        ("on_pre_optimizer_step", 1, 0.5),
        ("on_optimizer_step", 1, 0.5),
        ("on_step_end", 2, 1.0),
        ("on_epoch_end", 2, 1.0),
        ("on_log", 2, 1.0),
        ("on_log", 2, 1.0),
        ("on_evaluate", 2, 1.0),
        ("on_save", 2, 1.0),
        ("on_log", 2, 1.0),
        ("on_train_end", 2, 1.0),
    ]
    check_trace(trace)
    # a save before the evaluation breaks HF's order
    swapped = [*trace[:13], ("on_save", 1, 0.5), *trace[10:13], *trace[14:]]
    with pytest.raises(ValueError):
        check_trace(swapped)


def test_a_save_may_push_first_and_only_a_save() -> None:
    """push_to_hub during training: HF fires on_push_begin inside the save, just before on_save."""
    from statetrain.testing.grammar import check_trace

    trace = [
        ("on_train_begin", 0, 0.0),
        ("on_epoch_begin", 0, 0.0),
        ("on_step_begin", 0, 0.0),
        ("on_pre_optimizer_step", 0, 0.0),
        ("on_optimizer_step", 0, 0.0),
        ("on_step_end", 1, 1.0),
        ("on_push_begin", 1, 1.0),
        ("on_save", 1, 1.0),
        ("on_epoch_end", 1, 1.0),
        ("on_log", 1, 1.0),
        ("on_train_end", 1, 1.0),
    ]
    check_trace(trace)
    check_trace([*trace[:-2], ("on_push_begin", 1, 1.0), *trace[-2:]])  # a preemption checkpoint's push
    with pytest.raises(ValueError, match="unexpected 'on_push_begin'"):  # a push with no save
        check_trace([*trace[:7], *trace[8:]])
