"""Move checkpoints between transformers' ``Trainer`` and statetrain, both ways.

statetrain never loads a pickle when it resumes, and an HF checkpoint's optimizer, scheduler and
RNG files are pickles (``torch.save``). :func:`import_hf_checkpoint` reads them once, on request,
with ``torch.load(weights_only=True)`` (torch's restricted unpickler: tensors, containers and
plain values only; the RNG file also needs numpy's array reconstructors, allowlisted as
transformers does) and writes a verified statetrain checkpoint, so ``resume_from_checkpoint``
continues the HF run. ``training_args.bin`` (a pickle of a whole object) is never read.

An HF checkpoint does not record the gradient accumulation or the dataset length, only the
``global_step``; HF derives the data position of a resume from it and the resumed run's
arguments. The imported checkpoint says so in its manifest (``"data_position": "global_step"``)
and statetrain does the same on resume (see :func:`position_from_global_step`).

:func:`export_hf_checkpoint` writes the reverse: HF's file names, so ``transformers.Trainer``
resumes a statetrain run with its optimizer, scheduler and RNG. Those files are pickles
(``torch.save``), written only by this explicit call.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch

from statetrain.checkpoint.store import (
    MANIFEST_NAME,
    CheckpointError,
    list_checkpoints,
    verify_checkpoint,
    write_checkpoint,
)
from statetrain.checkpoint.tensor_tree import load_tree, save_tree, tree_paths
from statetrain.context.state import ENGINE_STATE_NAME, TRAINER_STATE_NAME, EngineState, TrainerState

__all__ = [
    "IMPORT_COMMAND",
    "HFCheckpointError",
    "export_hf_checkpoint",
    "import_hf_checkpoint",
    "position_from_global_step",
]

IMPORT_COMMAND = "statetrain import-hf-checkpoint SRC DST"
"""What the refusal of an HF folder tells the user to run."""

POSITION_KEY = "data_position"
"""Manifest metadata key of an imported checkpoint: its data position follows from ``global_step``."""

_PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".pickle")
_TREES = {"optimizer": "optimizer.pt", "scheduler": "scheduler.pt", "scaler": "scaler.pt"}
_RNG_RE = re.compile(r"^rng_state(?:_(\d+))?\.pth$")
_RNG_KEYS = ("python", "numpy", "cpu", "cuda")
_MODEL_FILES = ("model.safetensors", "adapter_model.safetensors")
_LOADED_BY_STATETRAIN = {MANIFEST_NAME, ENGINE_STATE_NAME, "training_args.json"}


class HFCheckpointError(ValueError):
    """A folder cannot be converted; the message names the file and why."""


# --- reading HF's pickles, safely ------------------------------------------------------------------


def _numpy_globals() -> list[Any]:
    """What a numpy RNG state needs in torch's restricted unpickler (arrays and their dtypes only)."""
    np_core = getattr(np, "_core", None) or np.core
    return [np_core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def _restricted_load(path: Path) -> Any:
    """``torch.load(weights_only=True)``: never arbitrary code; a file that needs more is refused by name."""
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError or RuntimeError with its own advice
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise HFCheckpointError(
            f"{path} cannot be read with torch.load(weights_only=True) ({first}); statetrain loads no other "
            "pickle. Was it written by transformers.Trainer?"
        ) from exc


def _require_dict(value: Any, path: Path, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise HFCheckpointError(f"{path} holds a {type(value).__name__}, not {what}")
    return value


# --- import ----------------------------------------------------------------------------------------


def _rng_files(src: Path) -> dict[int | None, Path]:
    found: dict[int | None, Path] = {}
    for entry in src.iterdir():
        match = _RNG_RE.match(entry.name)
        if match:
            found[int(match.group(1)) if match.group(1) is not None else None] = entry
    if None in found and len(found) > 1:
        raise HFCheckpointError(f"{src} has both rng_state.pth and per-rank rng_state_<rank>.pth files")
    ranks = sorted(k for k in found if k is not None)
    if ranks and ranks != list(range(len(ranks))):
        raise HFCheckpointError(f"{src} has RNG files for ranks {ranks}; expected 0..{len(ranks) - 1}")
    return found


def _model_file(src: Path) -> str:
    for name in _MODEL_FILES:
        if (src / name).is_file():
            return name
    if (src / "pytorch_model.bin").is_file():
        return "pytorch_model.bin"
    sharded = sorted(p.name for p in src.glob("model-*-of-*.safetensors"))
    detail = f" (sharded weights {sharded} are not supported yet)" if sharded else ""
    raise HFCheckpointError(f"{src} holds no model weights: expected {' or '.join(_MODEL_FILES)}{detail}")


def _read_hf(src: Path) -> tuple[TrainerState, dict[str, Any], dict[int | None, dict[str, Any]]]:
    """Everything an import needs, read and checked before anything is written."""
    if not src.is_dir():
        raise HFCheckpointError(f"{src} is not a folder")
    if (src / MANIFEST_NAME).is_file():
        raise HFCheckpointError(f"{src} is already a statetrain checkpoint (it has {MANIFEST_NAME})")
    state_path = src / TRAINER_STATE_NAME
    if not state_path.is_file():
        raise HFCheckpointError(f"{src} has no {TRAINER_STATE_NAME}: it is not a transformers.Trainer checkpoint")
    state = TrainerState.load_from_json(state_path)
    trees: dict[str, Any] = {}
    for stem, filename in _TREES.items():
        if (src / filename).is_file():
            trees[stem] = _restricted_load(src / filename)
        elif stem != "scaler":
            raise HFCheckpointError(
                f"{src} has no {filename}: it was saved without optimizer state (save_only_model=True?) and "
                "cannot be continued exactly"
            )
    _require_dict(trees["optimizer"], src / "optimizer.pt", "an optimizer state_dict")
    rng: dict[int | None, dict[str, Any]] = {}
    for rank, path in _rng_files(src).items():
        loaded = _require_dict(_restricted_load(path), path, "an RNG state")
        rng[rank] = {key: loaded[key] for key in _RNG_KEYS if key in loaded}
    if not rng:
        raise HFCheckpointError(f"{src} has no rng_state.pth: the continued run could not reproduce its randomness")
    return state, trees, rng


def _copy_model(src: Path, folder: Path, name: str) -> None:
    if name == "pytorch_model.bin":
        weights = _require_dict(_restricted_load(src / name), src / name, "a state_dict")
        safetensors.torch.save_file(
            {k: v.contiguous() for k, v in weights.items()}, str(folder / "model.safetensors"), {"format": "pt"}
        )
        return
    shutil.copyfile(src / name, folder / name)


def _side_files(src: Path) -> list[Path]:
    """Config, generation config, processing-class files, adapter config, README: copied as they are."""
    skip = {TRAINER_STATE_NAME, *_MODEL_FILES, *_LOADED_BY_STATETRAIN}
    return sorted(
        entry
        for entry in src.iterdir()
        if entry.is_file() and entry.name not in skip and not entry.name.endswith(_PICKLE_SUFFIXES)
    )


def import_hf_checkpoint(src: str | Path, dst: str | Path) -> Path:
    """Turn the transformers ``Trainer`` checkpoint folder ``src`` into the statetrain checkpoint ``dst``.

    ``dst`` must not exist; it is written atomically with a manifest and verified. ``train(
    resume_from_checkpoint=dst)`` then continues the HF run: weights, optimizer, scheduler, grad
    scaler, every RNG and ``TrainerState`` are HF's; the data position follows from ``global_step``
    and the resumed run's batch size and accumulation, as in HF. Returns ``dst``.
    """
    src, dst = Path(src), Path(dst)
    if dst.exists():
        raise HFCheckpointError(f"{dst} already exists; choose a new folder for the imported checkpoint")
    state, trees, rng = _read_hf(src)
    model_name = _model_file(src)
    world_size = max(1, len(rng))
    engine = EngineState(current_state="save", globalstep_last_logged=state.global_step)

    def write_files(folder: Path) -> None:
        _copy_model(src, folder, model_name)
        for entry in _side_files(src):
            shutil.copyfile(entry, folder / entry.name)
        shutil.copyfile(src / TRAINER_STATE_NAME, folder / TRAINER_STATE_NAME)
        for stem, tree in trees.items():
            save_tree(tree, folder, stem)
        for rank, rng_state in rng.items():
            save_tree(rng_state, folder, "rng_state" if rank is None else f"rng_state_{rank}")
        (folder / ENGINE_STATE_NAME).write_text(engine.to_json_string(), encoding="utf-8")

    metadata = {
        "global_step": state.global_step,
        "world_size": world_size,
        "save_only_model": False,
        POSITION_KEY: "global_step",
        "imported_from": str(src),
    }
    if state.train_batch_size is not None and world_size == 1:
        metadata["per_device_train_batch_size"] = state.train_batch_size
    path = write_checkpoint(dst.parent, dst.name, write_files, metadata)
    verify_checkpoint(path)
    return path


def position_from_global_step(engine: EngineState, global_step: int, steps_per_epoch: int, accumulation: int) -> None:
    """HF's resume position: the epoch ``global_step // steps_per_epoch``, that many windows into it."""
    per_epoch = max(1, steps_per_epoch)
    engine.epoch_index = global_step // per_epoch
    engine.epoch_ended = False
    engine.batches_in_epoch = (global_step % per_epoch) * accumulation


# --- export ----------------------------------------------------------------------------------------


def export_hf_checkpoint(src: str | Path, dst: str | Path) -> Path:
    """Write the statetrain checkpoint ``src`` as a transformers ``Trainer`` checkpoint folder ``dst``.

    ``src`` is verified first. ``dst`` gets HF's names: the weights and model-side files as they
    are, ``trainer_state.json``, and ``optimizer.pt``, ``scheduler.pt``, ``scaler.pt``,
    ``rng_state[_<rank>].pth`` written with ``torch.save`` (pickles: this call is the request for
    them). ``transformers.Trainer.train(resume_from_checkpoint=dst)`` continues with the same
    optimizer state. ``training_args.bin`` is not written (HF does not read it on resume).
    """
    src, dst = Path(src), Path(dst)
    if src.is_dir() and not (src / MANIFEST_NAME).is_file() and list_checkpoints(src):
        raise HFCheckpointError(f"{src} is an output_dir; pass one of its checkpoint folders")
    try:
        manifest = verify_checkpoint(src)
    except CheckpointError as exc:
        raise HFCheckpointError(f"cannot export {src}: {exc}") from exc
    if manifest["metadata"].get("save_only_model"):
        raise HFCheckpointError(f"{src} was written with save_only_model=True: it holds no optimizer state to export")
    if dst.exists():
        raise HFCheckpointError(f"{dst} already exists; choose a new folder for the exported checkpoint")
    tmp = dst.parent / f".tmp-export-{dst.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        _write_hf(src, tmp, set(manifest["files"]))
        tmp.rename(dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dst


def _write_hf(src: Path, folder: Path, files: set[str]) -> None:
    stems = {name[: -len(".json")] for name in files if name.endswith(".json")}
    tree_files: set[str] = set()
    for stem in sorted(stems):
        json_path, tensor_path = tree_paths(src, stem)
        if tensor_path.name not in files:
            continue
        target = _hf_tree_name(stem)
        if target is None:
            continue
        tree_files |= {json_path.name, tensor_path.name}
        torch.save(load_tree(src, stem), folder / target)
    skip = tree_files | _LOADED_BY_STATETRAIN
    for name in sorted(files - skip):
        if name.startswith("extra-"):  # what custom states registered: statetrain's own, HF has no use for it
            continue
        if "/" in name:
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / name, folder / name)
    _check_trainer_state(folder / TRAINER_STATE_NAME)


def _hf_tree_name(stem: str) -> str | None:
    if stem in _TREES:
        return _TREES[stem]
    if stem == "rng_state" or re.fullmatch(r"rng_state_\d+", stem):
        return f"{stem}.pth"
    return None


def _check_trainer_state(path: Path) -> None:
    if not path.is_file():
        raise HFCheckpointError(f"the checkpoint has no {TRAINER_STATE_NAME}")
    json.loads(path.read_text(encoding="utf-8"))
