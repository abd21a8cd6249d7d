"""push_to_hub during training, per hub_strategy, against a local Hub server (the real huggingface_hub client).

HF (transformers 5.24) is the reference: each checkpoint save pushes ``output_dir`` in the background
with "Training in progress, step N"; ``checkpoint`` adds the checkpoint as ``last-checkpoint``,
``all_checkpoints`` under its own name; a push still running is not doubled unless
``hub_always_push``; the end of training waits; a failed upload does not stop training.
"""

from __future__ import annotations

import json
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import transformers

from statetrain import Trainer, TrainerCallback, TrainingArguments
from statetrain.testing.grammar import check_trace
from statetrain.testing.recorder import TraceRecorder
from statetrain.trainer.hub import HubPushWarning
from tests.helpers import TinyRegressor, regression_rows
from tests.trainer.local_hub import USER, LocalHub, LocalHubServer

REPO = f"{USER}/tiny"
STEPS = [f"Training in progress, step {n}" for n in (1, 2, 3)]
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl")


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalHub]:
    """The local Hub, with the client pointed at it as ``HF_ENDPOINT`` would, and a dummy token."""
    import huggingface_hub.constants

    with LocalHubServer(tmp_path / "hub") as server:
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", server.url)
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setenv("HF_TOKEN", "hf_local_dummy_token")
        monkeypatch.setattr(transformers.utils.hub, "_hf_api", None)  # HF's shared client, built afresh here
        yield server


class WaitForPush(TrainerCallback):
    """After each save, wait for its push: every save then pushes (a fast loop would skip the busy ones)."""

    def __init__(self, trainer: Any) -> None:
        self.trainer = trainer

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.trainer.push_in_progress is not None:
            self.trainer.push_in_progress.wait_until_done()


def _args(folder: Path, strategy: str, hf: bool = False, **extra: Any) -> Any:
    options: dict[str, Any] = dict(
        per_device_train_batch_size=4,
        max_steps=3,
        save_strategy="steps",
        save_steps=1,
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        push_to_hub=True,
        hub_model_id="tiny",
        hub_strategy=strategy,
    )
    options.update(extra)
    cls = transformers.TrainingArguments if hf else TrainingArguments
    return cls(str(folder), **options)


def _train(folder: Path, strategy: str, wait: bool = True, hf: bool = False, recorder: Any = None, **extra: Any) -> Any:
    cls = transformers.Trainer if hf else Trainer
    trainer = cls(model=TinyRegressor(), args=_args(folder, strategy, hf, **extra), train_dataset=regression_rows(12))
    if recorder is not None:
        trainer.add_callback(recorder)
    if wait:
        trainer.add_callback(WaitForPush(trainer))
    trainer.train()
    return trainer


def test_every_save_pushes_the_model_after_each_checkpoint(hub: LocalHub, tmp_path: Path) -> None:
    out = tmp_path / "out"
    trainer = _train(out, "every_save")
    assert hub.messages(REPO) == STEPS
    files = hub.files(REPO)
    assert files["model.safetensors"] == (out / "checkpoint-3" / "model.safetensors").read_bytes()
    assert json.loads(files["training_args.json"])["hub_strategy"] == "every_save"
    assert not [p for p in files if p.startswith(("checkpoint-", ".", "_")) or p.endswith(PICKLE_SUFFIXES)]
    # the end: push_to_hub() waits for nothing left, then commits the final model and its card
    trainer.push_to_hub()
    assert hub.messages(REPO) == [*STEPS, "End of training"]
    final = hub.files(REPO)
    assert final["README.md"].startswith(b"---\nlibrary_name: statetrain")
    weights = safetensors.torch.load(final["model.safetensors"])
    assert set(weights) == set(trainer.model.state_dict())


def test_checkpoint_strategy_also_pushes_last_checkpoint(hub: LocalHub, tmp_path: Path) -> None:
    out = tmp_path / "out"
    _train(out, "checkpoint")
    assert hub.messages(REPO) == [m for s in STEPS for m in (s, f"{s}, checkpoint")]
    files = hub.files(REPO)
    last = {p.removeprefix("last-checkpoint/") for p in files if p.startswith("last-checkpoint/")}
    on_disk = {p.relative_to(out / "checkpoint-3").as_posix() for p in (out / "checkpoint-3").rglob("*")}
    assert last == on_disk and "trainer_state.json" in last
    assert json.loads(files["last-checkpoint/trainer_state.json"])["global_step"] == 3
    assert not [p for p in files if p.endswith(PICKLE_SUFFIXES)]
    # what arrived is a whole statetrain checkpoint: a run resumes from the downloaded folder
    args = TrainingArguments(
        str(tmp_path / "again"), max_steps=4, per_device_train_batch_size=4, use_cpu=True, report_to="none"
    )
    resumed = Trainer(model=TinyRegressor(), args=args, train_dataset=regression_rows(12))
    resumed.train(resume_from_checkpoint=str(hub.root / REPO / "main" / "last-checkpoint"))
    assert resumed.state.global_step == 4


def test_all_checkpoints_pushes_each_checkpoint_under_its_name(hub: LocalHub, tmp_path: Path) -> None:
    _train(tmp_path / "out", "all_checkpoints")
    assert hub.messages(REPO) == [m for s in STEPS for m in (s, f"{s}, checkpoint")]
    folders = {p.split("/")[0] for p in hub.files(REPO) if p.startswith("checkpoint-")}
    assert folders == {"checkpoint-1", "checkpoint-2", "checkpoint-3"}
    commit = next(c for c in hub.commits if c.message == f"{STEPS[1]}, checkpoint")
    assert commit.paths and all(p.startswith("checkpoint-2/") for p in commit.paths)


def test_saving_per_epoch_names_the_epoch(hub: LocalHub, tmp_path: Path) -> None:
    _train(tmp_path / "out", "every_save", save_strategy="epoch", max_steps=-1, num_train_epochs=2)
    assert hub.messages(REPO) == ["Training in progress, epoch 1", "Training in progress, epoch 2"]


def test_end_strategy_pushes_nothing_during_training(hub: LocalHub, tmp_path: Path) -> None:
    trainer = _train(tmp_path / "out", "end")
    assert hub.commits == [] and REPO in hub.repos
    trainer.push_to_hub(commit_message="done")
    assert hub.messages(REPO) == ["done"] and "model.safetensors" in hub.files(REPO)


@pytest.mark.parametrize("always_push", [False, True])
def test_a_push_still_running_is_not_doubled_unless_hub_always_push(
    hub: LocalHub, tmp_path: Path, always_push: bool
) -> None:
    hub.commit_gate = threading.Event()  # commits wait: the first push is still running at saves 2 and 3

    class ReleaseAtLastSave(TrainerCallback):
        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step == 3:
                assert hub.commits == []  # nothing committed yet: the pushes were in flight
                hub.commit_gate.set()  # type: ignore[union-attr]

    trainer = Trainer(
        model=TinyRegressor(),
        args=_args(tmp_path / "out", "every_save", hub_always_push=always_push),
        train_dataset=regression_rows(12),
        callbacks=[ReleaseAtLastSave()],
    )
    trainer.train()  # the end of training waits for the pushes still running
    assert trainer.push_in_progress is not None and trainer.push_in_progress.is_done()
    assert hub.messages(REPO) == (STEPS if always_push else STEPS[:1])


@pytest.mark.parametrize("status", [403, pytest.param(500, marks=pytest.mark.slow)])
def test_a_failed_push_does_not_stop_training_and_names_the_repository(
    hub: LocalHub, tmp_path: Path, status: int
) -> None:
    """500 is retried by the client (about 5 s here) before the push fails; 403 fails at once."""
    hub.fail_commits = status
    with pytest.warns(HubPushWarning) as caught:  # later saves may push (and fail) too
        trainer = _train(tmp_path / "out", "every_save", wait=False)
    first = rf"{REPO}'.*'Training in progress, step 1'\) failed: HfHubHTTPError: .*{status}"
    assert any(re.search(first, str(w.message), re.S) for w in caught), [str(w.message) for w in caught]
    assert trainer.state.global_step == 3 and (tmp_path / "out" / "checkpoint-3").is_dir()
    hub.fail_commits = None
    trainer.push_to_hub()  # the Hub is back: the final push goes through
    assert hub.messages(REPO) == ["End of training"]
    if status == 403:  # transformers, on the same failing server, trains on too (and says nothing of it)
        hub.fail_commits = status
        theirs = _train(tmp_path / "hf", "every_save", wait=False, hf=True)
        assert theirs.state.global_step == 3 and hub.messages(REPO) == ["End of training"]


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["every_save", "checkpoint", "all_checkpoints"])
def test_same_commits_as_transformers(hub: LocalHub, tmp_path: Path, strategy: str) -> None:
    """transformers.Trainer against the same server: the same commits and events; the files differ by HF's pickles."""
    their_trace, our_trace = TraceRecorder(), TraceRecorder()
    _train(tmp_path / "hf", strategy, hf=True, recorder=their_trace)
    theirs, their_files = list(hub.messages(REPO)), hub.files(REPO)
    hub.commits.clear()
    hub.repos.clear()  # a fresh repository of the same name for statetrain
    shutil.rmtree(hub.root / REPO)
    ours_trainer = _train(tmp_path / "ours", strategy, recorder=our_trace)
    assert hub.messages(REPO) == theirs
    assert our_trace.trace == their_trace.trace and our_trace.names.count("on_push_begin") == 3
    check_trace(our_trace.trace)  # the grammar: [ on_push_begin ] on_save
    assert ours_trainer.hub_model_id == REPO
    # HF's checkpoint files statetrain writes as safetensors/JSON instead (docs/differences.md)
    ours = set(hub.files(REPO))
    hf_only, ours_only = set(their_files) - ours, ours - set(their_files)
    assert "model.safetensors" in ours and all(p.endswith(PICKLE_SUFFIXES) for p in hf_only), hf_only
    assert all(p.endswith((".json", ".safetensors")) for p in ours_only), ours_only
