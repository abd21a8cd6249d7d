"""Progress display under HF's class names: a tqdm bar over steps, or printed logs."""

from __future__ import annotations

from pathlib import Path

import pytest

from statetrain import PrinterCallback, ProgressCallback, Trainer, TrainingArguments
from tests.helpers import TinyRegressor, regression_rows


def trainer(tmp_path: Path, disable_tqdm: bool) -> Trainer:
    args = TrainingArguments(
        str(tmp_path),
        per_device_train_batch_size=4,
        max_steps=6,
        logging_steps=3,
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=disable_tqdm,
    )
    return Trainer(model=TinyRegressor(), args=args, train_dataset=regression_rows(24))


def test_printer_prints_each_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    t = trainer(tmp_path, disable_tqdm=True)
    assert isinstance(t.callback_handler.callbacks[-1], PrinterCallback)
    t.train()
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("{")]
    assert len(lines) == 3  # steps 3 and 6, then the summary
    assert "'loss'" in lines[0] and "'train_loss'" in lines[-1]
    assert "total_flos" not in lines[-1]


def test_progress_bar_counts_optimizer_steps(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    t = trainer(tmp_path, disable_tqdm=False)
    bar = next(c for c in t.callback_handler.callbacks if isinstance(c, ProgressCallback))
    totals: list[int] = []
    original = bar.on_train_end

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        totals.append(bar.training_bar.n)
        return original(*args, **kwargs)

    bar.on_train_end = spy  # type: ignore[method-assign]
    t.remove_callback(bar)
    t.add_callback(bar)
    t.train()
    assert totals == [6] and bar.training_bar is None
    err = capsys.readouterr().err
    assert "6/6" in err
