"""Reading a run folder back (``trainer_state.json``, checkpoint manifests, JSON-lines logs) for reports.

May import ``checkpoint`` (to verify checkpoints) and the layers below it; ``demo`` and ``cli`` import it.
"""

from statetrain.reports.plots import Chart, plot_runs
from statetrain.reports.run_files import CheckpointStatus, RunRecord, read_run
from statetrain.reports.summary import format_summary, summarize

__all__ = ["Chart", "CheckpointStatus", "RunRecord", "format_summary", "plot_runs", "read_run", "summarize"]
