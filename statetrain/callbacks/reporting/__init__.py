"""Reporting callbacks: ``report_to`` names and the callbacks that log to trackers and files.

The tracker callbacks import their package when built, so only what ``report_to`` names is imported.
"""

from statetrain.callbacks.reporting.files import CsvCallback, JsonLinesCallback, read_csv, read_jsonl
from statetrain.callbacks.reporting.names import rewrite_logs
from statetrain.callbacks.reporting.registry import INTEGRATIONS, reporting_callbacks, resolve_report_to

__all__ = [
    "INTEGRATIONS",
    "CsvCallback",
    "JsonLinesCallback",
    "read_csv",
    "read_jsonl",
    "reporting_callbacks",
    "resolve_report_to",
    "rewrite_logs",
]
