"""What made transformers' test_trainer_checkpointing.py fail on statetrain (issue 13, item 7).

Compared with transformers: a finished run leaves in ``output_dir`` exactly the names HF leaves
(the run lock is removed, safely, when ``train()`` returns), HF's ``_evaluate`` hook decides the
metrics training acts on (HF's tests patch it), ``_get_output_dir`` (transformers'
``CheckpointManager`` calls it), and the wording of a missing ``metric_for_best_model``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest
import transformers

import statetrain
from statetrain.checkpoint.output_lock import LOCK_NAME, OutputDirInUseError, OutputDirLock
from tests.helpers import TinyRegressor, regression_rows

LIBRARIES = [transformers, statetrain]


def make(module: Any, out: Path, **options: Any) -> Any:
    options = {"max_steps": 6, **options}
    args = module.TrainingArguments(str(out), use_cpu=True, report_to="none", disable_tqdm=True, **options)
    return module.Trainer(
        model=TinyRegressor(), args=args, train_dataset=regression_rows(16), eval_dataset=regression_rows(8)
    )


def test_a_finished_run_leaves_the_names_hf_leaves(tmp_path: Path) -> None:
    names = []
    for module in LIBRARIES:
        out = tmp_path / module.__name__
        make(module, out, save_steps=2).train()
        names.append(sorted(os.listdir(out)))
    assert names[0] == names[1] == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]


def test_a_lock_file_removed_under_a_waiting_process_is_not_held(tmp_path: Path) -> None:
    """The holder ends between another run's open and its flock: that run must lock the new file."""
    holder = OutputDirLock(tmp_path, "first")
    holder.acquire()

    class Late(OutputDirLock):
        opened = 0

        def _open(self) -> int:
            fd = super()._open()
            Late.opened += 1
            if Late.opened == 1:
                holder.release()  # removes the file this run has just opened, then unlocks it
            return fd

    late = Late(tmp_path, "second")
    late.acquire()
    try:
        assert Late.opened == 2 and (tmp_path / LOCK_NAME).exists()
        with pytest.raises(OutputDirInUseError):
            OutputDirLock(tmp_path, "third").acquire()
    finally:
        late.release()
    assert not (tmp_path / LOCK_NAME).exists()


def test_patched_evaluate_hook_drives_best_checkpoint_like_hf(tmp_path: Path) -> None:
    """HF's tests replace ``Trainer._evaluate``; the metrics it returns decide the best checkpoint."""
    results = []
    for module in LIBRARIES:
        out = tmp_path / module.__name__
        trainer = make(
            module,
            out,
            eval_strategy="steps",
            eval_steps=2,
            save_strategy="best",
            metric_for_best_model="accuracy",
            greater_is_better=True,
        )
        side_effect = [{"eval_accuracy": 0.6}, {"eval_accuracy": 0.9}, {"eval_accuracy": 0.7}] * 3
        with patch.object(trainer, "_evaluate", side_effect=side_effect) as hook:
            trainer.train()
        assert hook.call_count > 1
        state = trainer.state
        best = Path(state.best_model_checkpoint).name
        calls = hook.call_count
        results.append((calls, state.best_metric, state.best_global_step, best, sorted(os.listdir(out))))
    assert results[0] == results[1]
    assert results[1][1:4] == (0.9, 2, "checkpoint-2")


@pytest.mark.parametrize("module", LIBRARIES, ids=lambda m: m.__name__)
def test_get_output_dir_is_the_run_folder(module: Any, tmp_path: Path) -> None:
    assert make(module, tmp_path)._get_output_dir(trial=None) == str(tmp_path)


@pytest.mark.parametrize("module", LIBRARIES, ids=lambda m: m.__name__)
def test_best_save_strategy_without_a_metric_says_hfs_words(module: Any, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"`args.metric_for_best_model` must be provided"):
        make(module, tmp_path, eval_strategy="epoch", save_strategy="best")


def test_save_total_limit_one_keeps_only_the_best_at_the_end(tmp_path: Path) -> None:
    """During training the newest checkpoint is kept beside the best; when the run ends, only the best."""
    results = []
    for module in LIBRARIES:
        out = tmp_path / module.__name__
        trainer = make(
            module,
            out,
            eval_strategy="steps",
            eval_steps=1,
            save_steps=1,
            save_total_limit=1,
            metric_for_best_model="accuracy",
            greater_is_better=True,
        )
        side_effect = [{"eval_accuracy": 0.9}] + [{"eval_accuracy": 0.5}] * 10
        with patch.object(trainer, "_evaluate", side_effect=side_effect):
            trainer.train()
        results.append((Path(trainer.state.best_model_checkpoint).name, sorted(os.listdir(out))))
    assert results[0] == results[1] == ("checkpoint-1", ["checkpoint-1"])
