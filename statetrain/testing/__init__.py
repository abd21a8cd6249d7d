"""Tools for testing loops and callbacks: the hand-written event grammar and a trace recorder."""

from statetrain.testing.grammar import (
    GrammarError,
    TraceRecorder,
    check_state_nesting,
    check_trace,
    hf_events_only,
)

__all__ = ["GrammarError", "TraceRecorder", "check_state_nesting", "check_trace", "hf_events_only"]
