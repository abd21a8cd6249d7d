"""Checkpoints through the Trainer (issue 5): layout, from_pretrained, corrupt and foreign folders,
pickle planting, refused changes, rotation, the best model, callback state, faults, kills, signals.

The store's own lifecycle (temp folder, rename, manifest, rotation under faults) is covered by
``tests/checkpoint/test_checkpoint_store.py``; here everything goes through ``Trainer.train``. A file-size
limit, SIGTERM and SIGKILL hit runs in one child process (``run_training.py``, next to this file,
running the three in turn so torch is imported once); each is resumed in this process, which never
trained it and so knows only what is on disk. Uninterrupted references are built here by the same
``build_trainer``. Every test runs torch on one thread, as the child does.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from statetrain import EarlyStoppingCallback, Trainer, TrainerCallback, TrainingArguments
from statetrain.checkpoint.output_lock import LOCK_NAME
from statetrain.checkpoint.store import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    CheckpointError,
    CheckpointWarning,
    CheckpointWriteError,
    latest_good_checkpoint,
    list_checkpoints,
    manifest_digest,
    verify_checkpoint,
)
from statetrain.context.preemption import PREEMPTION_EXIT_CODE
from statetrain.trainer import checkpoints as checkpointing
from statetrain.trainer.checkpoints import ResumeError
from tests.helpers import StopAfter, TinyRegressor, regression_rows
from tests.resume.run_training import build_trainer, parameters

SCRIPT = Path(__file__).with_name("run_training.py")
BASE: dict[str, Any] = {"rows": 24, "batch": 4, "max_steps": 6, "save_steps": 2}
"""The shared run: 6 steps of 6 per epoch, checkpoints at 2, 4, 6, dropout on."""

CHECKPOINT_FILES = {
    "model.safetensors",
    "optimizer.json",
    "optimizer.safetensors",
    "scheduler.json",
    "scheduler.safetensors",
    "rng_state.json",
    "rng_state.safetensors",
    "trainer_state.json",
    "engine_state.json",
    "training_args.json",
    MANIFEST_NAME,
}


# --------------------------------------------------------------------------- helpers


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Tiny tensors: extra intra-op threads only add contention on a busy machine (the child uses one too)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def assert_same_parameters(expected: dict[str, torch.Tensor], actual: dict[str, torch.Tensor]) -> None:
    assert expected.keys() == actual.keys()
    different = [name for name in expected if not torch.equal(expected[name], actual[name])]
    assert not different, f"parameters differ from the uninterrupted run: {different}"


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def rewrite_manifest_entry(checkpoint: Path, name: str) -> None:
    """Make the manifest vouch for ``name`` as it now is: the attacker controls the whole folder."""
    manifest_path = checkpoint / MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    data = (checkpoint / name).read_bytes()
    manifest["files"][name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    manifest["manifest_sha256"] = manifest_digest(manifest)  # and reseals it
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True), encoding="utf-8")


def run_child(tmp: Path, scenarios: dict[str, dict[str, Any]], timeout: float = 180) -> dict[str, Any]:
    """Run the named ``scenarios`` in order in one ``run_training.py`` process (torch imported once).

    Returns the exit status (``"exit_status"``) and each scenario's result by name (absent when the
    process died before writing it).
    """
    configs = []
    for name, config in scenarios.items():
        configs.append({**config, "result": str(tmp / f"{name}.result.json")})
    config_path = tmp / "child.config.json"
    config_path.write_text(json.dumps({"scenarios": configs}), encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(config_path)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=str(tmp),
        env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
    )
    results: dict[str, Any] = {"exit_status": proc.returncode, "stderr": proc.stderr[-4000:]}
    for name in scenarios:
        path = tmp / f"{name}.result.json"
        if path.is_file():
            results[name] = json.loads(path.read_text(encoding="utf-8"))
    return results


def reference(out: Path, **overrides: Any) -> dict[str, torch.Tensor]:
    """Train the uninterrupted run of ``BASE | overrides`` into ``out``; its final parameters."""
    trainer = build_trainer({**BASE, **overrides, "out": str(out)})
    trainer.train()
    return parameters(trainer)


@pytest.fixture(scope="module")
def base_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    """The uninterrupted BASE run (read-only for tests: copy it before changing anything)."""
    out = tmp_path_factory.mktemp("base") / "run"
    return out, reference(out)


def copy_run(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


# --------------------------------------------------------------------------- 1. layout


def test_layout_is_complete_and_pickle_free(base_run: tuple[Path, Any]) -> None:
    import transformers

    out, _ = base_run
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]
    # and nothing else: the run's lock file went with the lock when train() returned
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]
    for checkpoint in list_checkpoints(out):
        names = {p.relative_to(checkpoint).as_posix() for p in checkpoint.rglob("*") if p.is_file()}
        assert names == CHECKPOINT_FILES, checkpoint
        for path in checkpoint.rglob("*"):
            assert path.suffix not in (".pt", ".pth", ".bin", ".pkl", ".pickle"), path
            if path.is_file():
                head = path.read_bytes()[:2]
                assert head[:1] != b"\x80", f"{path} starts like a pickle"
                assert head != b"PK", f"{path} is a zip (torch.save format)"
        for name in names:
            if name.endswith(".json"):
                json.loads((checkpoint / name).read_text(encoding="utf-8"))
            else:
                load_file(str(checkpoint / name))
        manifest = verify_checkpoint(checkpoint)
        assert manifest["format_version"] == FORMAT_VERSION
        assert set(manifest["files"]) == CHECKPOINT_FILES - {MANIFEST_NAME}
        step = int(checkpoint.name.split("-")[1])
        hf_state = transformers.TrainerState.load_from_json(str(checkpoint / "trainer_state.json"))
        assert hf_state.global_step == step
        assert hf_state.max_steps == 6
        assert [e["step"] for e in hf_state.log_history if "loss" in e] == list(range(1, step + 1))
        args = json.loads((checkpoint / "training_args.json").read_text(encoding="utf-8"))
        assert args["save_steps"] == 2 and args["per_device_train_batch_size"] == 4
        assert json.loads((checkpoint / "engine_state.json").read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- 2. from_pretrained


def test_gpt2_checkpoint_loads_with_from_pretrained(tmp_path: Path) -> None:
    import transformers

    torch.manual_seed(0)
    config = transformers.GPT2Config(
        n_layer=2, n_head=2, n_embd=16, vocab_size=64, n_positions=32, bos_token_id=0, eos_token_id=0
    )
    model = transformers.GPT2LMHeadModel(config)
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()
    g = torch.Generator().manual_seed(0)
    rows = []
    for _ in range(16):
        ids = torch.randint(0, 64, (12,), generator=g)
        rows.append({"input_ids": ids, "labels": ids.clone()})
    args = TrainingArguments(
        str(tmp_path),
        save_strategy="steps",
        save_steps=2,
        max_steps=4,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        use_cpu=True,
        disable_tqdm=True,
        report_to="none",
    )
    trainer = Trainer(model=model, args=args, train_dataset=rows)
    trainer.train()
    checkpoint = tmp_path / "checkpoint-4"
    assert (checkpoint / "config.json").is_file()
    loaded = transformers.GPT2LMHeadModel.from_pretrained(str(checkpoint))
    assert loaded.lm_head.weight.data_ptr() == loaded.transformer.wte.weight.data_ptr(), "tie lost on load"
    model.eval()
    loaded.eval()
    batch = torch.stack([r["input_ids"] for r in rows[:3]])
    with torch.no_grad():
        assert torch.equal(model(input_ids=batch).logits, loaded(input_ids=batch).logits)
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


# --------------------------------------------------------------------------- 3. corrupt newest


def test_resume_true_skips_a_corrupt_newest_checkpoint(base_run: tuple[Path, Any], tmp_path: Path) -> None:
    source, final = base_run
    out = copy_run(source, tmp_path / "run")
    flip_byte(out / "checkpoint-6" / "optimizer.safetensors")
    trainer = build_trainer({**BASE, "out": str(out)})
    with pytest.warns(CheckpointWarning, match=r"checkpoint-6.*optimizer\.safetensors"):
        trainer.train(resume_from_checkpoint=True)
    assert trainer.state.global_step == 6
    losses = [e["step"] for e in trainer.state.log_history if "loss" in e]
    assert losses == list(range(1, 7)), "resumed from the wrong checkpoint"
    assert_same_parameters(final, parameters(trainer))
    verify_checkpoint(out / "checkpoint-6")  # the corrupt folder was replaced by a good one


@pytest.mark.parametrize("name", sorted(CHECKPOINT_FILES))
def test_a_flipped_byte_in_any_file_skips_the_checkpoint(base_run: tuple[Path, Any], tmp_path: Path, name: str) -> None:
    source, _ = base_run
    out = tmp_path / "run"
    for step in (4, 6):
        shutil.copytree(source / f"checkpoint-{step}", out / f"checkpoint-{step}")
    flip_byte(out / "checkpoint-6" / name)
    with pytest.warns(CheckpointWarning, match="checkpoint-6") as caught:
        assert latest_good_checkpoint(out) == out / "checkpoint-4"
    assert len(caught) == 1


# --------------------------------------------------------------------------- 4. foreign folders


@pytest.fixture(scope="module")
def hf_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import transformers

    out = tmp_path_factory.mktemp("hf") / "run"
    torch.manual_seed(0)
    args = transformers.TrainingArguments(
        str(out),
        save_strategy="steps",
        save_steps=2,
        max_steps=2,
        per_device_train_batch_size=4,
        use_cpu=True,
        disable_tqdm=True,
        report_to="none",
    )
    transformers.Trainer(model=TinyRegressor(), args=args, train_dataset=regression_rows(24, seed=3)).train()
    checkpoint = out / "checkpoint-2"
    assert (checkpoint / "optimizer.pt").is_file()
    return checkpoint


def test_hugging_face_checkpoint_is_refused(hf_checkpoint: Path, tmp_path: Path) -> None:
    trainer = build_trainer({**BASE, "out": str(tmp_path)})
    with pytest.raises(CheckpointError, match="Hugging Face") as caught:
        trainer.train(resume_from_checkpoint=str(hf_checkpoint))
    assert "pickle" in str(caught.value)


def test_resume_true_over_only_hugging_face_checkpoints_says_why(hf_checkpoint: Path) -> None:
    trainer = build_trainer({**BASE, "out": str(hf_checkpoint.parent)})
    with pytest.warns(CheckpointWarning, match="Hugging Face"), pytest.raises(ResumeError, match="No valid checkpoint"):
        trainer.train(resume_from_checkpoint=True)


def test_unknown_format_version_is_refused_naming_it(base_run: tuple[Path, Any], tmp_path: Path) -> None:
    source, _ = base_run
    checkpoint = tmp_path / "checkpoint-4"
    shutil.copytree(source / "checkpoint-4", checkpoint)
    manifest = json.loads((checkpoint / MANIFEST_NAME).read_text(encoding="utf-8"))
    manifest["format_version"] = 99
    (checkpoint / MANIFEST_NAME).write_text(json.dumps(manifest), encoding="utf-8")
    trainer = build_trainer({**BASE, "out": str(tmp_path / "out")})
    with pytest.raises(CheckpointError, match=r"format_version 99"):
        trainer.train(resume_from_checkpoint=str(checkpoint))


# --------------------------------------------------------------------------- 5. planted pickles


class _Payload:
    """Unpickling this runs ``os.system("touch <marker>")``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def crafted_pickle(marker: Path) -> bytes:
    return pickle.dumps(_Payload(marker), protocol=2)


READ_ON_RESUME = sorted(CHECKPOINT_FILES - {MANIFEST_NAME, "training_args.json"})
NEVER_READ = [
    "training_args.json",
    "training_args.bin",
    "optimizer.pt",
    "scheduler.pt",
    "scaler.pt",
    "rng_state.pth",
    "rng_state_0.pth",
    "pytorch_model.bin",
    "config.json",
]


@pytest.fixture(scope="module")
def pickle_marker_armed(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The payload really executes when unpickled (so its absence below means something)."""
    armed = tmp_path_factory.mktemp("armed") / "armed"
    pickle.loads(crafted_pickle(armed))  # the point of the check
    assert armed.exists()


def plant(source: Path, tmp_path: Path, name: str, marker: Path) -> Path:
    checkpoint = tmp_path / "planted" / "checkpoint-4"
    shutil.copytree(source / "checkpoint-4", checkpoint)
    (checkpoint / name).write_bytes(crafted_pickle(marker))
    rewrite_manifest_entry(checkpoint, name)
    verify_checkpoint(checkpoint)  # the manifest vouches for the pickle: only loading can refuse it
    return checkpoint


@pytest.mark.parametrize("name", READ_ON_RESUME + NEVER_READ)
def test_planted_pickle_is_never_executed(
    base_run: tuple[Path, Any], tmp_path: Path, name: str, pickle_marker_armed: None
) -> None:
    source, final = base_run
    marker = tmp_path / "pwned"
    checkpoint = plant(source, tmp_path, name, marker)
    trainer = build_trainer({**BASE, "out": str(tmp_path / "out")})
    if name in READ_ON_RESUME:
        with pytest.raises(Exception) as caught:
            trainer.train(resume_from_checkpoint=str(checkpoint))
        assert not isinstance(caught.value, (AssertionError, pickle.UnpicklingError))
    else:
        trainer.train(resume_from_checkpoint=str(checkpoint))  # ignored: never read on resume
        assert_same_parameters(final, parameters(trainer))
    assert not marker.exists(), f"the pickle planted as {name} was executed"


@pytest.mark.parametrize(
    "name",
    READ_ON_RESUME,
)
def test_planted_pickle_is_refused_with_an_error_naming_the_file(
    base_run: tuple[Path, Any], tmp_path: Path, name: str
) -> None:
    source, _ = base_run
    checkpoint = plant(source, tmp_path, name, tmp_path / "pwned")
    trainer = build_trainer({**BASE, "out": str(tmp_path / "out")})
    with pytest.raises(Exception) as caught:
        trainer.train(resume_from_checkpoint=str(checkpoint))
    assert name in str(caught.value), f"{type(caught.value).__name__}: {caught.value}"


# --------------------------------------------------------------------------- 6. changed configuration


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"batch": 2}, "per_device_train_batch_size"),
        ({"accumulation": 2}, "gradient_accumulation_steps"),
        ({"rows": 30}, "dataset_length"),
    ],
)
def test_changed_geometry_is_refused_naming_the_field(
    base_run: tuple[Path, Any], tmp_path: Path, override: dict[str, Any], field: str
) -> None:
    source, _ = base_run
    trainer = build_trainer({**BASE, **override, "out": str(tmp_path)})
    with pytest.raises(ResumeError, match=field):
        trainer.train(resume_from_checkpoint=str(source / "checkpoint-4"))
    assert not list_checkpoints(tmp_path)


def test_a_refused_resume_leaves_the_trainer_untouched(base_run: tuple[Path, Any], tmp_path: Path) -> None:
    source, _ = base_run
    trainer = build_trainer({**BASE, "batch": 2, "out": str(tmp_path)})
    before = parameters(trainer)
    with pytest.raises(ResumeError):
        trainer.train(resume_from_checkpoint=str(source / "checkpoint-4"))
    assert_same_parameters(before, parameters(trainer))
    assert trainer.state.global_step == 0


def test_larger_max_steps_extends_the_run(base_run: tuple[Path, Any], tmp_path: Path) -> None:
    source, _ = base_run
    trainer = build_trainer({**BASE, "max_steps": 9, "out": str(tmp_path)})
    output = trainer.train(resume_from_checkpoint=str(source / "checkpoint-6"))
    assert trainer.state.global_step == output.global_step == 9
    assert trainer.state.max_steps == 9
    assert [e["step"] for e in trainer.state.log_history if "loss" in e] == list(range(1, 10))
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-8", "checkpoint-9"]


def test_changed_seed_only_warns(base_run: tuple[Path, Any], tmp_path: Path) -> None:
    source, _ = base_run
    trainer = build_trainer({**BASE, "seed": 8, "out": str(tmp_path)})
    with pytest.warns(UserWarning, match=r"seed 8.*used 7"):
        trainer.train(resume_from_checkpoint=str(source / "checkpoint-4"))
    assert trainer.state.global_step == 6


# --------------------------------------------------------------------------- 7. save_only_model


def test_save_only_model_checkpoint_is_refused(tmp_path: Path) -> None:
    torch.manual_seed(0)

    def args(**extra: Any) -> TrainingArguments:
        return TrainingArguments(
            str(tmp_path),
            save_strategy="steps",
            save_steps=2,
            max_steps=4,
            per_device_train_batch_size=4,
            use_cpu=True,
            disable_tqdm=True,
            report_to="none",
            **extra,
        )

    Trainer(model=TinyRegressor(), args=args(save_only_model=True), train_dataset=regression_rows(24)).train()
    checkpoint = tmp_path / "checkpoint-4"
    names = {p.name for p in checkpoint.iterdir()}
    assert "model.safetensors" in names and not any(n.startswith(("optimizer", "rng_state")) for n in names)
    trainer = Trainer(model=TinyRegressor(), args=args(), train_dataset=regression_rows(24))
    with pytest.raises(ResumeError, match=r"save_only_model.*(optimizer|RNG)"):
        trainer.train(resume_from_checkpoint=True)


# --------------------------------------------------------------------------- 8-9. rotation, best model

SCORES = [1.0, 9.0, 2.0, 3.0, 4.0, 5.0]
"""Evaluation ``score`` by call: the best is the second evaluation (step 4), never the newest."""


def scripted_metrics() -> Any:
    calls: list[int] = []

    def compute_metrics(prediction: Any) -> dict[str, float]:
        calls.append(1)
        return {"score": SCORES[len(calls) - 1]}

    return compute_metrics


def eval_trainer(out: Path, callbacks: list[Any] | None = None, **extra: Any) -> Trainer:
    torch.manual_seed(0)
    args = TrainingArguments(
        str(out),
        save_strategy="steps",
        save_steps=2,
        eval_strategy="steps",
        eval_steps=2,
        max_steps=12,
        per_device_train_batch_size=4,
        metric_for_best_model="score",
        greater_is_better=True,
        learning_rate=0.05,
        use_cpu=True,
        disable_tqdm=True,
        report_to="none",
        **extra,
    )
    return Trainer(
        model=TinyRegressor(),
        args=args,
        train_dataset=regression_rows(24),
        eval_dataset=regression_rows(8, seed=1),
        compute_metrics=scripted_metrics(),
        callbacks=callbacks,
    )


class ListOnSave(TrainerCallback):
    def __init__(self) -> None:
        self.seen: list[tuple[int, str | None, list[str]]] = []

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        names = sorted(p.name for p in Path(args.output_dir).iterdir() if p.name != LOCK_NAME)
        self.seen.append((state.global_step, state.best_model_checkpoint, names))


def test_rotation_keeps_the_best_and_the_newest(tmp_path: Path) -> None:
    watch = ListOnSave()
    eval_trainer(tmp_path, [watch], save_total_limit=2).train()
    assert [step for step, _, _ in watch.seen] == [2, 4, 6, 8, 10, 12]
    for step, best, names in watch.seen:
        assert f"checkpoint-{step}" in names, f"newest deleted at step {step}: {names}"
        assert best is not None and Path(best).name in names, f"best {best} deleted at step {step}: {names}"
        assert len(names) <= 2, f"more than save_total_limit at step {step}: {names}"
        assert not any(n.startswith(".") for n in names), names
    assert watch.seen[-1][1] == str(tmp_path / "checkpoint-4")
    assert sorted(p.name for p in list_checkpoints(tmp_path)) == ["checkpoint-12", "checkpoint-4"]
    for checkpoint in list_checkpoints(tmp_path):
        verify_checkpoint(checkpoint)


def test_load_best_model_at_end_restores_the_best_checkpoint(tmp_path: Path) -> None:
    trainer = eval_trainer(tmp_path, load_best_model_at_end=True)
    trainer.train()
    assert trainer.state.best_model_checkpoint == str(tmp_path / "checkpoint-4")
    best = load_file(str(tmp_path / "checkpoint-4" / "model.safetensors"))
    last = load_file(str(tmp_path / "checkpoint-12" / "model.safetensors"))
    assert any(not torch.equal(best[k], last[k]) for k in best), "test needs the best to differ from the last"
    state = trainer.model.state_dict()
    assert best.keys() == state.keys()
    for key, value in best.items():
        assert torch.equal(state[key], value), key


# --------------------------------------------------------------------------- 10. callback state


class CountersAtBegin(TrainerCallback):
    def __init__(self, watched: list[EarlyStoppingCallback]) -> None:
        self.watched = watched
        self.counters: list[int] | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.counters = [c.early_stopping_patience_counter for c in self.watched]


def early_stopping_trainer(out: Path, callbacks: list[Any]) -> Trainer:
    torch.manual_seed(0)
    args = TrainingArguments(
        str(out),
        save_strategy="steps",
        save_steps=2,
        eval_strategy="steps",
        eval_steps=2,
        max_steps=10,
        per_device_train_batch_size=4,
        metric_for_best_model="loss",
        learning_rate=1e-3,
        use_cpu=True,
        disable_tqdm=True,
        report_to="none",
    )
    return Trainer(
        model=TinyRegressor(),
        args=args,
        train_dataset=regression_rows(24),
        eval_dataset=regression_rows(8, seed=1),
        callbacks=callbacks,
    )


def pair() -> list[EarlyStoppingCallback]:
    # same class, different counters: a huge threshold counts every evaluation after the first as a miss
    return [EarlyStoppingCallback(3, 0.0), EarlyStoppingCallback(5, 1e6)]


def test_two_early_stopping_instances_get_their_own_counters_back(tmp_path: Path) -> None:
    full = pair()
    early_stopping_trainer(tmp_path / "full", full).train()
    cut = pair()
    early_stopping_trainer(tmp_path / "cut", [*cut, StopAfter(6)]).train()
    at_checkpoint = [c.early_stopping_patience_counter for c in cut]
    assert at_checkpoint[0] != at_checkpoint[1], "the test needs counters that differ"
    stored = json.loads((tmp_path / "cut" / "checkpoint-6" / "trainer_state.json").read_text(encoding="utf-8"))
    assert isinstance(stored["stateful_callbacks"]["EarlyStoppingCallback"], list)

    resumed = pair()
    probe = CountersAtBegin(resumed)
    trainer = early_stopping_trainer(tmp_path / "cut", [*resumed, probe])
    trainer.train(resume_from_checkpoint=True)
    assert probe.counters == at_checkpoint, "each instance must get its own counter back, in order"
    registered = [c for c in trainer.callback_handler.callbacks if isinstance(c, EarlyStoppingCallback)]
    assert len(registered) == 2 and registered[0] is resumed[0] and registered[1] is resumed[1]
    assert [c.early_stopping_patience for c in resumed] == [3, 5]
    assert [c.early_stopping_patience_counter for c in resumed] == [c.early_stopping_patience_counter for c in full]
    assert trainer.state.global_step == 10


# --------------------------------------------------------------------------- 11. write faults


def test_file_size_limit_during_a_save_stops_training_and_resume_is_exact(
    base_run: tuple[Path, Any], children: tuple[Path, dict[str, Any]]
) -> None:
    # RLIMIT_FSIZE of 1 KiB from checkpoint-2's on_save on: the next checkpoint's first file is bigger.
    _, final = base_run
    root, results = children
    out = root / "fsize"
    result = results["fsize"]
    assert result["exit_status"] == 1, result
    assert result["error_type"] == "CheckpointWriteError", result.get("traceback")
    assert str(out / "checkpoint-4") in result["message"], result["message"]
    assert "File too large" in result["message"] or result["errno"] == errno.EFBIG, result["message"]
    assert result["global_step"] == 4
    assert sorted(p.name for p in out.iterdir() if p.name != LOCK_NAME) == ["checkpoint-2"], (
        "a temporary folder was left"
    )
    verify_checkpoint(out / "checkpoint-2")

    trainer = build_trainer({**BASE, "out": str(out)})
    trainer.train(resume_from_checkpoint=True)
    assert_same_parameters(final, parameters(trainer))


def test_disk_full_during_a_save_stops_training_and_resume_is_exact(
    base_run: tuple[Path, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, final = base_run
    original = checkpointing.save_tree
    calls: list[str] = []

    def full_disk(obj: Any, directory: Any, name: str) -> Any:
        calls.append(name)
        if Path(directory).name.startswith(".tmp-checkpoint-4-"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return original(obj, directory, name)

    monkeypatch.setattr(checkpointing, "save_tree", full_disk)
    trainer = build_trainer({**BASE, "out": str(tmp_path)})
    with pytest.raises(CheckpointWriteError) as caught:
        trainer.train()
    error = caught.value
    assert error.errno == errno.ENOSPC
    assert error.target == tmp_path / "checkpoint-4"
    assert str(tmp_path / "checkpoint-4") in str(error) and os.strerror(errno.ENOSPC) in str(error)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != LOCK_NAME) == ["checkpoint-2"]
    verify_checkpoint(tmp_path / "checkpoint-2")

    monkeypatch.setattr(checkpointing, "save_tree", original)
    resumed = build_trainer({**BASE, "out": str(tmp_path)})
    resumed.train(resume_from_checkpoint=True)
    assert_same_parameters(final, parameters(resumed))


# --------------------------------------------------------------------------- 12. SIGKILL


def test_sigkill_during_a_save_then_resume(base_run: tuple[Path, Any], children: tuple[Path, dict[str, Any]]) -> None:
    # The child was killed with model and optimizer files of checkpoint-4 written, before its manifest.
    # Resuming here (a process that never trained this run) reads only what is on disk.
    _, final = base_run
    root, results = children
    out = root / "killed"
    assert results["exit_status"] == -signal.SIGKILL, results["stderr"]
    assert "killed" not in results, "the killed run got to write a result"
    names = sorted(p.name for p in out.iterdir() if p.name != LOCK_NAME)
    assert len(names) == 2 and names[0].startswith(".tmp-checkpoint-4-") and names[1] == "checkpoint-2", names
    assert {p.name for p in (out / names[0]).iterdir()} >= {"model.safetensors", "optimizer.safetensors"}
    with warnings.catch_warnings():
        warnings.simplefilter("error", CheckpointWarning)  # the temporary folder is not even a candidate
        assert latest_good_checkpoint(out) == out / "checkpoint-2"

    trainer = build_trainer({**BASE, "out": str(out)})
    trainer.train(resume_from_checkpoint=True)
    assert [e["step"] for e in trainer.state.log_history if "loss" in e] == list(range(1, 7))
    assert_same_parameters(final, parameters(trainer))
    # and nothing else: the run's lock file went with the lock when train() returned
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]
    for checkpoint in list_checkpoints(out):
        verify_checkpoint(checkpoint)


# --------------------------------------------------------------------------- 13. signals

TERM = {"rows": 24, "batch": 2, "accumulation": 3, "max_steps": 6, "save_steps": 4}
"""12 micro-batches in windows of 3: 4 steps an epoch; SIGTERM twice inside step 3's window."""


@pytest.fixture(scope="module")
def children(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """One child process runs the fault, the signal and (last, as it dies) the kill scenarios."""
    root = tmp_path_factory.mktemp("children")
    scenarios = {
        "fsize": {**BASE, "out": str(root / "fsize"), "fsize_limit": 1024, "fsize_after_save": 2},
        "term": {
            **TERM,
            "out": str(root / "term"),
            "sigterm_at_substep": 2,
            "params": str(root / "term.safetensors"),
        },
        "killed": {**BASE, "out": str(root / "killed"), "kill_during_save": 4},
    }
    return root, run_child(root, scenarios)


def test_sigterm_mid_window_preempts_with_a_checkpoint_and_resume_is_exact(
    tmp_path: Path, children: tuple[Path, dict[str, Any]]
) -> None:
    final = reference(tmp_path / "ref", **TERM)
    root, results = children
    out = root / "term"
    result = results["term"]
    assert result["exit_status"] == PREEMPTION_EXIT_CODE, result
    assert result["status"] == "preempted" and result["signal_name"] == "SIGTERM"
    assert result["sigterms_sent"] == 2, "the second SIGTERM must not abort the run"
    assert result["substeps_after_signal"] == 0, "the window in progress is finished, nothing more"
    assert result["preempted_step"] == result["global_step"] == 3
    checkpoint = out / "checkpoint-3"
    assert result["checkpoint"] == str(checkpoint) and str(checkpoint) in result["message"]
    assert result["train_end_fired"]
    assert result["sigterm_handler_restored"]
    verify_checkpoint(checkpoint)
    saved = load_file(str(checkpoint / "model.safetensors"))
    preempted = load_file(str(root / "term.safetensors"))
    for name, value in preempted.items():
        assert torch.equal(saved[name], value), "the checkpoint must hold the model at the preemption"

    trainer = build_trainer({**TERM, "out": str(out)})
    trainer.train(resume_from_checkpoint=str(checkpoint))
    assert trainer.state.global_step == 6
    assert_same_parameters(final, parameters(trainer))


class DoubleInterrupt(TrainerCallback):
    def on_substep_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGINT)


def test_second_sigint_aborts_without_a_checkpoint(tmp_path: Path) -> None:
    before = signal.getsignal(signal.SIGINT)
    trainer = build_trainer({**TERM, "out": str(tmp_path / "run")}, callbacks=[DoubleInterrupt()])
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    assert signal.getsignal(signal.SIGINT) is before
    run = tmp_path / "run"
    assert not run.exists() or [p.name for p in run.iterdir()] == []
    assert trainer.state.global_step == 0
