"""Testing kit for users' loops: hypothesis strategies, the stateful kill-and-resume harness, the
event-grammar and machine-trace checkers, oracles and tiny models.

May import everything but ``examples``, ``demo`` and ``cli``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from statetrain.testing.flags import CONTROL_FLAGS, FlagScheduleCallback, FlagSetting
from statetrain.testing.grammar import GrammarError, check_trace, hf_events_only
from statetrain.testing.nesting import check_state_nesting
from statetrain.testing.oracles import Evaluation, RunRecorder, check_epoch_coverage, early_stopping_reference
from statetrain.testing.recorder import TraceRecorder
from statetrain.testing.resume_check import ResumeComparison, assert_resumes_bit_exactly, compare_trainers
from statetrain.testing.tiny import RowStream, TinyClassifier, tiny_rows

if TYPE_CHECKING:
    from statetrain.testing.harness import HarnessFailure, LoopHarness, ScriptedMetric, SegmentCut, harness_settings
    from statetrain.testing.strategies import (
        TrainingConfig,
        control_flag_schedules,
        interruption_points,
        metric_sequences,
        training_configs,
    )

_NEEDS_HYPOTHESIS = {
    "HarnessFailure": "statetrain.testing.harness",
    "LoopHarness": "statetrain.testing.harness",
    "ScriptedMetric": "statetrain.testing.harness",
    "SegmentCut": "statetrain.testing.harness",
    "harness_settings": "statetrain.testing.harness",
    "TrainingConfig": "statetrain.testing.strategies",
    "control_flag_schedules": "statetrain.testing.strategies",
    "interruption_points": "statetrain.testing.strategies",
    "metric_sequences": "statetrain.testing.strategies",
    "training_configs": "statetrain.testing.strategies",
}

__all__ = [
    "CONTROL_FLAGS",
    "Evaluation",
    "FlagScheduleCallback",
    "FlagSetting",
    "GrammarError",
    "HarnessFailure",
    "LoopHarness",
    "ResumeComparison",
    "RowStream",
    "RunRecorder",
    "ScriptedMetric",
    "SegmentCut",
    "TinyClassifier",
    "TraceRecorder",
    "TrainingConfig",
    "assert_resumes_bit_exactly",
    "check_epoch_coverage",
    "check_state_nesting",
    "check_trace",
    "compare_trainers",
    "control_flag_schedules",
    "early_stopping_reference",
    "harness_settings",
    "hf_events_only",
    "interruption_points",
    "metric_sequences",
    "tiny_rows",
    "training_configs",
]


def __getattr__(name: str) -> Any:
    """Import the hypothesis-based names on first use."""
    module = _NEEDS_HYPOTHESIS.get(name)
    if module is None:
        raise AttributeError(f"module 'statetrain.testing' has no attribute {name!r}")
    try:
        value = getattr(importlib.import_module(module), name)
    except ModuleNotFoundError as exc:
        if exc.name != "hypothesis":
            raise
        raise ImportError(f"statetrain.testing.{name} needs hypothesis: pip install 'statetrain[testing]'") from exc
    globals()[name] = value
    return value
