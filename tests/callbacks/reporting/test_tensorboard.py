"""report_to="tensorboard": what TensorBoard reads back, HF's names and steps, resume without repeats."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from tests.callbacks.reporting.runs import tensorboard_scalars, train_tiny

pytestmark = pytest.mark.usefixtures("offline_trackers")


def _run_folder(output_dir: Path) -> Path:
    folders = sorted((output_dir / "runs").iterdir())
    assert len(folders) == 1, folders
    return folders[0]


def test_tensorboard_holds_hf_names_at_each_logged_step(tmp_path: Path) -> None:
    trainer = train_tiny(tmp_path / "out", "tensorboard")
    scalars = tensorboard_scalars(_run_folder(tmp_path / "out"))
    losses = [(e["step"], e["loss"]) for e in trainer.state.log_history if "loss" in e]
    assert [s for s, _ in scalars["train/loss"]] == [s for s, _ in losses] == [1, 2, 3, 4, 5, 6]
    assert all(math.isclose(a, b, rel_tol=1e-6) for (_, a), (_, b) in zip(scalars["train/loss"], losses, strict=True))
    assert [s for s, _ in scalars["train/learning_rate"]] == [1, 2, 3, 4, 5, 6]
    assert [s for s, _ in scalars["eval/loss"]] == [3, 6]
    assert [s for s, _ in scalars["train/train_loss"]] == [6]


def test_tensorboard_logging_dir_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tb"))
    train_tiny(tmp_path / "out", ["tensorboard"], max_steps=3)
    assert [s for s, _ in tensorboard_scalars(tmp_path / "tb")["train/loss"]] == [1, 2, 3]
    assert not (tmp_path / "out" / "runs").exists()


def test_a_resumed_run_continues_the_same_tensorboard_series_without_repeats(tmp_path: Path) -> None:
    out = tmp_path / "out"
    whole = train_tiny(out, "tensorboard")  # logged steps 1..6 and saved at 2, 4, 6
    # resuming from step 4 replays steps 5 and 6, as after a crash between the saves
    train_tiny(out, "tensorboard", resume=str(out / "checkpoint-4"))
    scalars = tensorboard_scalars(_run_folder(out))
    assert [s for s, _ in scalars["train/loss"]] == [1, 2, 3, 4, 5, 6]
    assert [s for s, _ in scalars["eval/loss"]] == [3, 6]
    losses = [e["loss"] for e in whole.state.log_history if "loss" in e]
    assert all(math.isclose(a, b, rel_tol=1e-6) for (_, a), b in zip(scalars["train/loss"], losses, strict=True))


@pytest.mark.slow
def test_tensorboard_series_match_transformers_trainer(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    from tests.helpers import TinyRegressor, regression_rows

    train_tiny(tmp_path / "ours", "tensorboard")
    ours = tensorboard_scalars(_run_folder(tmp_path / "ours"))
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "hf"),
        max_steps=6,
        per_device_train_batch_size=4,
        logging_steps=1,
        eval_strategy="steps",
        eval_steps=3,
        save_steps=2,
        learning_rate=0.05,
        report_to="tensorboard",
        disable_tqdm=True,
        use_cpu=True,
        seed=3,
    )
    torch.manual_seed(0)  # as train_tiny builds its model
    transformers.Trainer(
        model=TinyRegressor(),
        args=args,
        train_dataset=regression_rows(48),
        eval_dataset=regression_rows(8, seed=1),
    ).train()
    theirs = tensorboard_scalars(_run_folder(tmp_path / "hf"))
    assert sorted(ours) == sorted(theirs)
    for tag, series in theirs.items():
        assert [s for s, _ in ours[tag]] == [s for s, _ in series], tag
    timing = ("runtime", "per_second")
    for tag, series in theirs.items():
        if not tag.endswith(timing):
            assert [v for _, v in ours[tag]] == pytest.approx([v for _, v in series], rel=1e-4, abs=1e-6), tag
