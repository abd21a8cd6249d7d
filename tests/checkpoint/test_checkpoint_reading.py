"""Checkpoint reading is total: each malformed input is the store's own error naming the file, a resume
from True falls back to the previous good checkpoint, the best model comes only from the run's own
verified checkpoints, and a changed optimizer type is named."""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from statetrain import Trainer, TrainerCallback, TrainingArguments
from statetrain.checkpoint.contents import MODEL_NAME
from statetrain.checkpoint.store import (
    MANIFEST_CAP,
    MANIFEST_NAME,
    CheckpointError,
    CheckpointWarning,
    manifest_digest,
    verify_checkpoint,
)
from statetrain.trainer.checkpoints import ResumeError
from tests.helpers import TinyRegressor, regression_rows


class FirstStep(TrainerCallback):
    def __init__(self) -> None:
        self.first: int | None = None

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.first is None:
            self.first = state.global_step


def build(out: Path, callbacks: list[Any] | None = None, **extra: Any) -> Trainer:
    options: dict[str, Any] = dict(
        per_device_train_batch_size=4,
        max_steps=4,
        save_steps=2,
        learning_rate=0.05,
        use_cpu=True,
        report_to="none",
        disable_tqdm=True,
        logging_steps=1,
        seed=3,
    )
    return Trainer(
        model=TinyRegressor(),
        args=TrainingArguments(str(out), **{**options, **extra}),
        train_dataset=regression_rows(16),
        eval_dataset=regression_rows(8, seed=5),
        callbacks=callbacks,
    )


@pytest.fixture(scope="module")
def base_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("base") / "run"
    build(out).train()
    return out


def reseal(checkpoint: Path, name: str | None = None, drop: str | None = None) -> None:
    """Make the manifest vouch for the folder as it now is (a tool or attacker controlling the folder)."""
    manifest = json.loads((checkpoint / MANIFEST_NAME).read_text(encoding="utf-8"))
    if name is not None:
        data = (checkpoint / name).read_bytes()
        manifest["files"][name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    if drop is not None:
        del manifest["files"][drop]
    manifest["manifest_sha256"] = manifest_digest(manifest)
    (checkpoint / MANIFEST_NAME).write_text(json.dumps(manifest), encoding="utf-8")


def flip_metadata(cp: Path) -> None:
    text = (cp / MANIFEST_NAME).read_text(encoding="utf-8")
    (cp / MANIFEST_NAME).write_text(text.replace('"dataset_length": 16', '"dataset_length": 17'), encoding="utf-8")


def deep_state(cp: Path) -> None:
    (cp / "trainer_state.json").write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    reseal(cp, "trainer_state.json")


def huge_int(cp: Path) -> None:
    state = (cp / "trainer_state.json").read_text(encoding="utf-8")
    (cp / "trainer_state.json").write_text(state.replace('"global_step": 4', '"global_step": 4' + "0" * 5000))
    reseal(cp, "trainer_state.json")


def huge_manifest(cp: Path) -> None:
    text = (cp / MANIFEST_NAME).read_text(encoding="utf-8")
    (cp / MANIFEST_NAME).write_text(text + " " * MANIFEST_CAP, encoding="utf-8")


def no_manifest(cp: Path) -> None:
    (cp / MANIFEST_NAME).unlink()


def no_weights(cp: Path) -> None:
    (cp / MODEL_NAME).unlink()
    reseal(cp, drop=MODEL_NAME)


CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "flipped metadata": (flip_metadata, "does not match its own checksum"),
    "deep nesting": (deep_state, "trainer_state.json cannot be loaded.*nested too deeply"),
    "huge integer": (huge_int, "trainer_state.json cannot be loaded.*5001 digits"),
    "huge manifest": (huge_manifest, f"{MANIFEST_NAME} is malformed: larger than the {MANIFEST_CAP} bytes"),
    "missing manifest": (no_manifest, f"incomplete: it has no {MANIFEST_NAME}"),
    "manifest vouching for no weights": (no_weights, f"incomplete: it lacks {MODEL_NAME}"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_malformed_checkpoint_is_named_and_resume_true_falls_back(base_run: Path, tmp_path: Path, case: str) -> None:
    corrupt, expected = CASES[case]
    out = tmp_path / "run"
    shutil.copytree(base_run, out)
    corrupt(out / "checkpoint-4")
    with pytest.raises(CheckpointError, match=expected) as info:
        build(out).train(resume_from_checkpoint=str(out / "checkpoint-4"))
    assert str(out / "checkpoint-4") in str(info.value)
    assert "Hugging Face" not in str(info.value) and "the run changed" not in str(info.value)
    first = FirstStep()
    with pytest.warns(CheckpointWarning, match=f"skipping checkpoint {out / 'checkpoint-4'}.*{expected}"):
        build(out, [first]).train(resume_from_checkpoint=True)
    assert first.first == 3  # resumed from checkpoint-2


# --- the best model ----------------------------------------------------------------------------


def best_run(out: Path, **extra: Any) -> Trainer:
    return build(out, eval_strategy="steps", eval_steps=2, load_best_model_at_end=True, **extra)


def point_best_at(checkpoint: Path, target: str) -> None:
    state = json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
    state["best_model_checkpoint"], state["best_metric"], state["best_global_step"] = target, -1.0, None
    (checkpoint / "trainer_state.json").write_text(json.dumps(state, indent=2, sort_keys=True), encoding="utf-8")
    reseal(checkpoint, "trainer_state.json")


def test_the_best_model_never_comes_from_outside_output_dir(tmp_path: Path) -> None:
    best_run(tmp_path / "run", max_steps=2).train()
    best_run(tmp_path / "elsewhere", max_steps=2, seed=9).train()
    outside = tmp_path / "elsewhere" / "checkpoint-2"
    verify_checkpoint(outside)  # a perfectly good checkpoint, of another run
    point_best_at(tmp_path / "run" / "checkpoint-2", str(outside))
    with pytest.raises(CheckpointError, match=r"is not a checkpoint-<step> folder of output_dir") as info:
        best_run(tmp_path / "run").train(resume_from_checkpoint=True)
    assert str(outside) in str(info.value)


def test_a_corrupt_best_checkpoint_is_refused_not_loaded(tmp_path: Path) -> None:
    out = tmp_path / "run"
    best_run(out, max_steps=2).train()
    point_best_at(out / "checkpoint-2", str(out / "checkpoint-2"))
    trainer = best_run(out)

    class Corrupt(TrainerCallback):
        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            data = bytearray((out / "checkpoint-2" / MODEL_NAME).read_bytes())
            data[-1] ^= 0xFF
            (out / "checkpoint-2" / MODEL_NAME).write_bytes(bytes(data))

    trainer.add_callback(Corrupt())
    with pytest.raises(CheckpointError, match=r"checkpoint-2 is corrupt: model.safetensors: checksum mismatch"):
        trainer.train(resume_from_checkpoint=True)


# --- the optimizer -----------------------------------------------------------------------------


def test_switching_the_optimizer_type_on_resume_names_both(base_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    shutil.copytree(base_run, out)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = build(out, optim="sgd")
    with pytest.raises(ResumeError) as info:
        trainer.train(resume_from_checkpoint=True)
    message = str(info.value)
    assert "optim='adamw_torch_fused'" in message and "SGD" in message and "optim='sgd'" in message
