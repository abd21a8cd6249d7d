"""Memory metrics of ``skip_memory_metrics=False``: what each stage allocated and peaked at, as HF reports.

With ``skip_memory_metrics=False`` transformers adds ``<stage>_mem_cpu_alloc_delta`` and
``<stage>_mem_cpu_peaked_delta`` (and ``_gpu_`` twins when CUDA is there) to the metrics of
``train`` (stage ``train``), ``evaluate`` (``eval``) and ``predict`` (``test``), plus the
``init`` stage (the Trainer's construction) and ``before_init_mem_cpu`` with the first of them.
Values are bytes: the resident set size (psutil) at the end less at the start, and how far the
peak rose above the end (a sampling thread watches the RSS; torch's counters give the GPU peak).
A stage that starts while another runs (an evaluation inside training) is not measured on its own.
"""

from __future__ import annotations

import threading
from typing import Any

import torch

__all__ = ["MemoryTracker"]

_SAMPLE_SECONDS = 0.001


class _PeakWatcher(threading.Thread):
    """Samples the process's RSS until stopped; ``peak`` is the highest seen."""

    def __init__(self, process: Any) -> None:
        super().__init__(daemon=True, name="statetrain-memory-peak")
        self.process = process
        self.peak = process.memory_info().rss
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(_SAMPLE_SECONDS):
            self.peak = max(self.peak, self.process.memory_info().rss)


class MemoryTracker:
    """Measures one stage at a time; ``enabled=False`` (HF's default) makes every call free."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.current: str | None = None
        self.results: dict[str, dict[str, int]] = {}
        self.init_reported = False
        self._begin: dict[str, int] = {}
        self._watcher: _PeakWatcher | None = None
        self._process: Any = None
        if enabled:
            import psutil  # an accelerate dependency

            self._process = psutil.Process()
        self.cuda = enabled and torch.cuda.is_available()

    def start(self, stage: str) -> None:
        if not self.enabled or self.current is not None:
            return
        self.current = stage
        self._begin = {"cpu": self._process.memory_info().rss}
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
            self._begin["gpu"] = torch.cuda.memory_allocated()
        self._watcher = _PeakWatcher(self._process)
        self._watcher.start()

    def stop(self, stage: str) -> None:
        if not self.enabled or self.current != stage or self._watcher is None:
            return
        self._watcher.halt.set()
        self._watcher.join()
        end = self._process.memory_info().rss
        peak = max(self._watcher.peak, end)
        result = {"cpu_begin": self._begin["cpu"], "cpu_alloc": end - self._begin["cpu"], "cpu_peaked": peak - end}
        if self.cuda:
            gpu_end = torch.cuda.memory_allocated()
            result["gpu_begin"] = self._begin["gpu"]
            result["gpu_alloc"] = gpu_end - self._begin["gpu"]
            result["gpu_peaked"] = max(0, torch.cuda.max_memory_allocated() - gpu_end)
        self.results[stage] = result
        self.current, self._watcher = None, None

    def stop_and_report(self, stage: str, metrics: dict[str, Any]) -> None:
        """End ``stage`` and add its metrics (and, the first time, the ``init`` stage's) to ``metrics``."""
        if not self.enabled or self.current != stage:
            return
        self.stop(stage)
        stages = [stage]
        if not self.init_reported and "init" in self.results:
            stages.insert(0, "init")
            self.init_reported = True
        for name in stages:
            result = self.results.get(name, {})
            for device in ("cpu", "gpu"):
                for kind in ("alloc", "peaked"):
                    if f"{device}_{kind}" in result:
                        metrics[f"{name}_mem_{device}_{kind}_delta"] = result[f"{device}_{kind}"]
        if stages[0] == "init":
            metrics["before_init_mem_cpu"] = self.results["init"]["cpu_begin"]
            if "gpu_begin" in self.results["init"]:
                metrics["before_init_mem_gpu"] = self.results["init"]["gpu_begin"]
