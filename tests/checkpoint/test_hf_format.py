"""Continuing a transformers.Trainer run with statetrain, and the reverse (issue 13, item 6).

An HF checkpoint of a tiny GPT-2 (dropout on, accumulation 2, cosine schedule, saved mid-epoch) is
imported and resumed by statetrain; its losses, gradient norms and learning rates equal those of
transformers resuming the same folder. A statetrain checkpoint exported to HF's layout is resumed by
transformers with the same optimizer state and the same following losses as statetrain's own run.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers

import statetrain
from statetrain.checkpoint.hf_format import HFCheckpointError, export_hf_checkpoint, import_hf_checkpoint
from statetrain.checkpoint.store import CheckpointError, verify_checkpoint
from statetrain.checkpoint.tensor_tree import load_tree
from statetrain.cli import main
from tests.checkpoint.gpt2_runs import assert_logs_close, lm_args, lm_rows, step_logs, tiny_gpt2

pytestmark = pytest.mark.slow
SAVED_AT = 3


@pytest.fixture(scope="module")
def hf_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """transformers trains 8 steps, saving at 3 and 6 (3 is mid-epoch: 5 steps per epoch)."""
    out = tmp_path_factory.mktemp("hf") / "run"
    trainer = transformers.Trainer(model=tiny_gpt2(), args=lm_args(transformers, str(out)), train_dataset=lm_rows())
    trainer.train()
    return out


@pytest.fixture(scope="module")
def statetrain_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    out = tmp_path_factory.mktemp("st") / "run"
    trainer = statetrain.Trainer(model=tiny_gpt2(), args=lm_args(statetrain, str(out)), train_dataset=lm_rows())
    trainer.train()
    return out, trainer.state.log_history


def test_imported_checkpoint_continues_as_hf_does(hf_run: Path, tmp_path: Path) -> None:
    source = hf_run / f"checkpoint-{SAVED_AT}"
    hf = transformers.Trainer(
        model=tiny_gpt2(), args=lm_args(transformers, str(tmp_path / "hf")), train_dataset=lm_rows()
    )
    hf.train(resume_from_checkpoint=str(source))

    imported = import_hf_checkpoint(source, tmp_path / "imported")
    verify_checkpoint(imported)
    ours = statetrain.Trainer(
        model=tiny_gpt2(seed=7), args=lm_args(statetrain, str(tmp_path / "st")), train_dataset=lm_rows()
    )
    ours.train(resume_from_checkpoint=str(imported))

    assert ours.state.global_step == hf.state.global_step == 8
    assert_logs_close(step_logs(ours.state.log_history, SAVED_AT), step_logs(hf.state.log_history, SAVED_AT))
    for (name, a), b in zip(ours.model.named_parameters(), hf.model.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), name


def test_import_keeps_weights_state_and_holds_no_pickle(hf_run: Path, tmp_path: Path) -> None:
    source = hf_run / f"checkpoint-{SAVED_AT}"
    imported = import_hf_checkpoint(source, tmp_path / "imported")
    names = set(os.listdir(imported))
    assert {"model.safetensors", "config.json", "trainer_state.json", "optimizer.json", "rng_state.json"} <= names
    assert not [n for n in names if n.endswith((".pt", ".pth", ".bin"))]
    hf_optimizer = torch.load(source / "optimizer.pt", weights_only=True)
    ours = load_tree(imported, "optimizer")
    assert ours["param_groups"] == hf_optimizer["param_groups"]
    for key, state in hf_optimizer["state"].items():
        for name, value in state.items():
            assert torch.equal(ours["state"][key][name], value), (key, name)
    assert (imported / "trainer_state.json").read_bytes() == (source / "trainer_state.json").read_bytes()


def test_hf_folder_passed_to_resume_names_the_command(hf_run: Path, tmp_path: Path) -> None:
    trainer = statetrain.Trainer(model=tiny_gpt2(), args=lm_args(statetrain, str(tmp_path)), train_dataset=lm_rows())
    with pytest.raises(CheckpointError, match="statetrain import-hf-checkpoint"):
        trainer.train(resume_from_checkpoint=str(hf_run / f"checkpoint-{SAVED_AT}"))


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("planted", ["optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin"])
def test_import_never_runs_a_planted_pickle(hf_run: Path, tmp_path: Path, planted: str) -> None:
    folder = tmp_path / "hf"
    folder.mkdir()
    for entry in (hf_run / f"checkpoint-{SAVED_AT}").iterdir():
        (folder / entry.name).write_bytes(entry.read_bytes())
    marker = tmp_path / "pwned"
    (folder / planted).write_bytes(pickle.dumps(_Payload(marker), protocol=2))
    if planted == "training_args.bin":  # never read at all
        import_hf_checkpoint(folder, tmp_path / "imported")
    else:
        with pytest.raises(HFCheckpointError, match=rf"{planted}.*weights_only=True"):
            import_hf_checkpoint(folder, tmp_path / "imported")
        assert not (tmp_path / "imported").exists()
    assert not marker.exists()


def test_exported_checkpoint_resumes_in_hf_with_the_same_optimizer(
    statetrain_run: tuple[Path, list[dict[str, Any]]], tmp_path: Path
) -> None:
    out, history = statetrain_run
    exported = export_hf_checkpoint(out / f"checkpoint-{SAVED_AT}", tmp_path / "hf" / f"checkpoint-{SAVED_AT}")
    names = set(os.listdir(exported))
    assert {"optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json", "model.safetensors"} <= names
    assert not [n for n in names if n.startswith("statetrain_") or n.startswith("optimizer.s")]

    seen: dict[str, Any] = {}

    class OptimizerAtStart(transformers.TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            seen["optimizer"] = {k: {n: t.clone() for n, t in v.items()} for k, v in kwargs["optimizer"].state.items()}

    hf = transformers.Trainer(
        model=tiny_gpt2(seed=7),
        args=lm_args(transformers, str(tmp_path / "hf")),
        train_dataset=lm_rows(),
        callbacks=[OptimizerAtStart()],
    )
    hf.train(resume_from_checkpoint=str(exported))
    saved = load_tree(out / f"checkpoint-{SAVED_AT}", "optimizer")["state"]
    loaded = list(seen["optimizer"].values())
    assert len(loaded) == len(saved)
    for index, state in enumerate(loaded):
        for name, value in state.items():
            assert torch.equal(value, saved[index][name]), (index, name)
    assert_logs_close(step_logs(hf.state.log_history, SAVED_AT), step_logs(history, SAVED_AT))


def test_cli_converts_both_ways_and_reports_errors(
    hf_run: Path, statetrain_run: tuple[Path, list[dict[str, Any]]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["import-hf-checkpoint", str(hf_run / f"checkpoint-{SAVED_AT}"), str(tmp_path / "in")]) == 0
    verify_checkpoint(tmp_path / "in")
    assert main(["import-hf-checkpoint", str(hf_run / f"checkpoint-{SAVED_AT}"), str(tmp_path / "in")]) == 1
    assert "already exists" in capsys.readouterr().err
    out, _ = statetrain_run
    assert main(["export-hf-checkpoint", str(out / f"checkpoint-{SAVED_AT}"), str(tmp_path / "exp")]) == 0
    assert (tmp_path / "exp" / "optimizer.pt").is_file()
    assert main(["export-hf-checkpoint", str(hf_run / f"checkpoint-{SAVED_AT}"), str(tmp_path / "exp2")]) == 1
    assert "Hugging Face Trainer checkpoint" in capsys.readouterr().err
