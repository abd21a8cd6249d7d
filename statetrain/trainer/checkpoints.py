"""Checkpoints of a run and resuming from them: what goes into a checkpoint and how it comes back.

The on-disk lifecycle (temporary folder, fsync, rename, manifest with checksums, rotation) is
``checkpoint_store``'s job; tensors and nested state go through ``tensor_tree`` (safetensors +
JSON, never pickle). This module decides the content, in HF's layout where HF has one:

``model.safetensors`` (+ ``config.json`` and the processing class when they can be saved),
``optimizer.*``, ``scheduler.*``, ``scaler.*``, ``rng_state[_<rank>].*``, ``trainer_state.json``
(HF's layout), ``engine_state.json`` (machine state, data position, loss sums) and
``training_args.json``.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import safetensors.torch
from torch import nn

from statetrain.checkpoint.contents import (
    ARGS_NAME,
    MODEL_NAME,
    check_state_files,
    optimizer_mismatch,
    required_files,
    resolve_best_checkpoint,
    weights_are_finite,
)
from statetrain.checkpoint.model_files import processor_to_save, save_model_files
from statetrain.checkpoint.peft_adapter import AdapterLoadError, is_peft_model, load_adapter
from statetrain.checkpoint.processes import commit_checkpoint, gather_rng_states, world_size_mismatch, write_rng_files
from statetrain.checkpoint.resume_geometry import (
    epochs_for_budget,
    geometry_changes,
    rescale_position,
    review_changes,
    steps_for_epochs,
)
from statetrain.checkpoint.rng import load_rng_state
from statetrain.checkpoint.store import (
    MANIFEST_NAME,
    PREFIX,
    CheckpointError,
    CheckpointWarning,
    latest_good_checkpoint,
    read_manifest_metadata,
    rotate_checkpoints,
    verify_checkpoint,
)
from statetrain.checkpoint.tensor_tree import load_tree, save_tree, tensor_identity
from statetrain.context.state import ENGINE_STATE_NAME, TRAINER_STATE_NAME, EngineState, TrainerState
from statetrain.data.batches import length_or_none
from statetrain.distributed.processes import agree_everywhere

if TYPE_CHECKING:
    from statetrain.context.run import Run, TrainingPlan

logger = logging.getLogger(__name__)

__all__ = ["ARGS_NAME", "MODEL_NAME", "CheckpointMixin", "ResumeError", "load_model_weights", "save_model_files"]

CHECKPOINTABLE_PREFIX = "extra-"
"""File stem prefix of the objects custom states register (``extra-<name>.json/.safetensors``)."""


class ResumeError(ValueError):
    """A checkpoint cannot continue this run; the message names what differs or what is missing."""


def _plain(value: Any) -> Any:
    return getattr(value, "value", value)


def load_model_weights(model: nn.Module, folder: Path) -> None:
    """Load ``model.safetensors`` (a PEFT model: its adapter) into ``model``; a missing or unexpected key is an error.

    Loaded through ``load_state_dict``, which copies into the parameters in place, so a model whose
    parameters are views of a flat buffer (DeepSpeed ZeRO) loads too. A tied tensor saved under one
    name fills every name that shares it.
    """
    if is_peft_model(model):
        try:
            load_adapter(model, folder)
        except AdapterLoadError as exc:
            raise ResumeError(str(exc)) from exc
        return
    path = folder / MODEL_NAME
    if not path.is_file():
        raise ResumeError(f"{path} is missing: the checkpoint holds no model weights")
    try:
        saved = safetensors.torch.load_file(str(path))
    except (safetensors.SafetensorError, OSError, ValueError) as exc:
        raise ResumeError(f"{path} is not a readable safetensors file: {exc}") from exc
    live = model.state_dict()
    unexpected = sorted(set(saved) - set(live))
    loaded_identities = {tensor_identity(live[name]) for name in saved if name in live}
    missing = sorted(n for n in live if n not in saved and tensor_identity(live[n]) not in loaded_identities)
    if missing or unexpected:
        raise ResumeError(f"{path} does not match the model: missing {missing}, unexpected {unexpected}")
    try:
        model.load_state_dict(saved, strict=False)
    except RuntimeError as exc:  # shapes that differ
        raise ResumeError(f"{path} does not match the model: {exc}") from exc


class CheckpointMixin:
    """Save and resume, mixed into the Trainer."""

    if TYPE_CHECKING:  # what the Trainer provides
        args: Any
        accelerator: Any
        model: nn.Module
        model_wrapped: nn.Module
        processing_class: Any
        state: TrainerState
        control: Any
        bus: Any
        train_dataset: Any
        lr_scheduler: Any
        optimizer: Any
        _train_batch_size: int

        def store_flos(self, run: Run | None = None) -> None: ...
        def _snapshot_stateful_callbacks(self) -> None: ...
        def _push_from_checkpoint(self, checkpoint_folder: str | Path) -> None: ...
        def _finish_current_push(self) -> None: ...

    # --- saving -------------------------------------------------------------------------------
    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Write the model (and config, processing class) to ``output_dir`` (HF ``save_model``)."""
        target = Path(output_dir if output_dir is not None else self.args.output_dir)
        from statetrain.checkpoint.fsdp import gather_model_state  # FSDP/DeepSpeed code loads when used

        full_state = gather_model_state(self.model_wrapped)  # FSDP: every process takes part
        if not self.args.should_save:
            return
        target.mkdir(parents=True, exist_ok=True)
        save_model_files(
            self.accelerator.unwrap_model(self.model),
            processor_to_save(self.processing_class, self.data_collator),  # type: ignore[attr-defined]
            target,
            full_state,
        )
        (target / ARGS_NAME).write_text(self.args.to_json_string(), encoding="utf-8")
        if self.args.push_to_hub and not _internal_call:
            self.push_to_hub(commit_message="Model save", revision=self.args.hub_revision)  # type: ignore[attr-defined]

    def _checkpoint_metadata(self, run: Run | None = None) -> dict[str, Any]:
        """What a resume must match (or knowingly override), recorded in the manifest.

        The dataset length is the one the run started with: a dataset a custom state switched to
        mid-run (a curriculum) is the run's own doing, not a change a resume must refuse.
        """
        dataset_length = run.dataset_length if run is not None else length_or_none(self.train_dataset)
        return {
            "global_step": self.state.global_step,
            "world_size": self.args.world_size,
            "per_device_train_batch_size": self._train_batch_size,
            "gradient_accumulation_steps": self.args.gradient_accumulation_steps,
            "dataset_length": dataset_length,
            "seed": self.args.seed,
            "save_only_model": bool(self.args.save_only_model),
        }

    def _get_output_dir(self, trial: Any = None) -> str:
        """HF's hook: the folder checkpoints go to; during a search ``output_dir`` already is the trial's."""
        del trial
        return str(self.args.output_dir)

    def _save_checkpoint(self, run: Run) -> Path | None:
        """Write ``checkpoint-<global_step>`` atomically, then rotate (never the best, never the newest).

        Weights that are not all finite are never written: the save is refused with a
        :class:`CheckpointWarning` and returns ``None``, so the earlier (finite) checkpoints stay,
        rotation included (it runs only after a commit).
        """
        args, state = self.args, self.state
        run.nonfinite.report(run)
        if not agree_everywhere(args, weights_are_finite(run.model)):
            warnings.warn(
                f"not saving checkpoint-{state.global_step}: the model's weights are not finite (NaN or "
                "infinite), so it could not continue training; the earlier checkpoints are kept. See "
                "nan_inf_policy in docs/checkpoints.md",
                CheckpointWarning,
                stacklevel=2,
            )
            return None
        self.store_flos(run)
        output_dir = Path(args.output_dir)
        name = f"{PREFIX}-{state.global_step}"
        if _plain(args.save_strategy) in ("steps", "epoch", "best") and state.best_global_step:
            best = output_dir / f"{PREFIX}-{state.best_global_step}"
            if best.name == name or best.is_dir():
                state.best_model_checkpoint = str(best)
        self._snapshot_stateful_callbacks()
        tr_loss = run.tr_loss
        run.engine.tr_loss = float(tr_loss.item()) if tr_loss is not None else 0.0
        if getattr(run, "machine_model", None) is not None:  # the state the machine is in is the one that saves
            run.engine.current_state = run.machine_model.state
        engine_json = run.engine.to_json_string()
        model = self.accelerator.unwrap_model(run.model)
        rng_states = None if args.save_only_model else gather_rng_states(args)  # every rank's, to one writer
        from statetrain.checkpoint.fsdp import gather_for_checkpoint  # FSDP/DeepSpeed code loads when used

        full_model, full_optimizer = gather_for_checkpoint(run.model, run.optimizer, bool(args.save_only_model))

        def write_files(folder: Path) -> None:
            save_model_files(
                model,
                processor_to_save(self.processing_class, self.data_collator),  # type: ignore[attr-defined]
                folder,
                full_model,
            )
            if not args.save_only_model:
                raw_optimizer = getattr(run.optimizer, "optimizer", run.optimizer)
                optimizer_state = full_optimizer if full_optimizer is not None else raw_optimizer.state_dict()
                save_tree(optimizer_state, folder, "optimizer")
                save_tree(run.lr_scheduler.state_dict(), folder, "scheduler")
                if self.accelerator.scaler is not None:
                    save_tree(self.accelerator.scaler.state_dict(), folder, "scaler")
                write_rng_files(folder, args, rng_states)
                for key, obj in run.checkpointables.items():
                    save_tree(obj.state_dict(), folder, f"{CHECKPOINTABLE_PREFIX}{key}")
            state.save_to_json(folder / TRAINER_STATE_NAME)
            (folder / ENGINE_STATE_NAME).write_text(engine_json, encoding="utf-8")
            (folder / ARGS_NAME).write_text(args.to_json_string(), encoding="utf-8")

        protected = [Path(state.best_model_checkpoint)] if state.best_model_checkpoint else []
        # written once; with several processes every rank waits until the checkpoint is committed
        metadata = self._checkpoint_metadata(run)
        path = commit_checkpoint(args, output_dir, name, write_files, metadata, protected, required_files)
        if args.push_to_hub:
            self._push_from_checkpoint(path)  # per hub_strategy, in the background (HF)
        return path

    # --- resuming -----------------------------------------------------------------------------
    def _resolve_checkpoint(self, resume_from_checkpoint: str | bool) -> Path:
        """``True`` → the newest good checkpoint in ``output_dir``; a path → that one, verified."""
        if resume_from_checkpoint is True:
            found = latest_good_checkpoint(Path(self.args.output_dir), required_files, check_state_files)
            if found is None:
                raise ResumeError(
                    f"No valid checkpoint found in output directory ({self.args.output_dir}): no checkpoint-<step> "
                    "folder there verifies"
                )
            return found
        path = Path(str(resume_from_checkpoint))
        if not path.is_dir():
            raise ResumeError(f"Can't find a valid checkpoint at {path}: resume_from_checkpoint is not a folder")
        try:
            verify_checkpoint(path, required=required_files)
            check_state_files(path)
        except CheckpointError as exc:  # HF's wording first, so scripts matching it keep working
            raise CheckpointError(f"Can't find a valid checkpoint at {path}: {exc}") from exc
        return path

    def _locate_checkpoint(self, resume_from_checkpoint: str | bool, name: str) -> Path:
        """The checkpoint another process verified, as this process sees it (no hashing).

        ``name`` is the folder the verifying process chose; an explicit path keeps its own name, so
        processes given different paths still disagree visibly.
        """
        explicit = resume_from_checkpoint is not True
        path = Path(str(resume_from_checkpoint)) if explicit else Path(self.args.output_dir) / name
        if not (path / MANIFEST_NAME).is_file():
            raise ResumeError(
                f"{path} has no {MANIFEST_NAME} on this process's file system, though the main process found and "
                "verified it; every process must see the same output_dir"
            )
        return path

    def _check_resume_compatible(self, path: Path) -> dict[str, Any]:
        """Refuse a checkpoint whose batch geometry or data differ from this run's, naming each change.

        The checkpoint was verified when it was resolved, so only its manifest is read here.
        """
        recorded = read_manifest_metadata(path)
        if recorded.get("save_only_model"):
            raise ResumeError(
                f"{path} was written with save_only_model=True: it holds no optimizer, scheduler or RNG "
                "state, so training cannot continue exactly from it"
            )
        current = self._checkpoint_metadata()
        if recorded.get("world_size", current["world_size"]) != current["world_size"]:
            raise ResumeError(world_size_mismatch(path, recorded["world_size"], current["world_size"]))
        refusal = review_changes(path, recorded, current, getattr(self.args, "resume_allow_changed", None))
        if refusal is not None:
            raise ResumeError(refusal)
        if recorded.get("seed") not in (None, current["seed"]):
            warnings.warn(
                f"resuming from {path} with seed {current['seed']} (the checkpoint used {recorded['seed']})",
                stacklevel=2,
            )
        return recorded

    def _load_checkpoint_state(self, path: Path, plan: TrainingPlan | None = None) -> tuple[TrainerState, EngineState]:
        state = TrainerState.load_from_json(path / TRAINER_STATE_NAME)
        engine = EngineState.load_from_json(path / ENGINE_STATE_NAME)
        recorded, current = read_manifest_metadata(path), self._checkpoint_metadata()
        from statetrain.checkpoint.hf_format import POSITION_KEY, position_from_global_step

        if recorded.get(POSITION_KEY) == "global_step" and plan is not None:
            # imported from transformers: the position follows from global_step and this run, as in HF
            position_from_global_step(
                engine, state.global_step, plan.num_update_steps_per_epoch, plan.gradient_accumulation_steps
            )
        elif geometry_changes(recorded, current):
            # a geometry change that resume_allow_changed accepted: the data position, in current batches
            engine.batches_in_epoch = rescale_position(engine.batches_in_epoch, recorded, current)
            state.train_batch_size = self._train_batch_size
        if state.best_model_checkpoint is not None and not Path(state.best_model_checkpoint).is_dir():
            logger.warning(
                "the best checkpoint %s recorded in the resumed state no longer exists; ignoring it",
                state.best_model_checkpoint,
            )
            state.best_model_checkpoint = None
        return state, engine

    def _resumed_plan(self, path: Path, plan: TrainingPlan, engine: EngineState) -> TrainingPlan:
        """The plan of a resume whose geometry changed: the budget asked for, from the resumed position.

        An explicit ``max_steps`` gets enough epochs to be reached; without one, the step count is
        set so that the planned epochs' worth of samples is trained (see ``resume_geometry``).
        """
        if not geometry_changes(read_manifest_metadata(path), self._checkpoint_metadata()):
            return plan
        position = (self.state.global_step, engine.epoch_index, engine.batches_in_epoch, engine.epoch_ended)
        if self.args.max_steps > 0:
            return dataclasses.replace(plan, num_train_epochs=epochs_for_budget(plan, *position))
        return dataclasses.replace(plan, max_steps=steps_for_epochs(plan, *position))

    def _load_optimizer_and_schedule(self, path: Path, run: Run) -> None:
        raw_optimizer = getattr(run.optimizer, "optimizer", run.optimizer)
        saved = load_tree(path, "optimizer", map_location=self.args.device)
        mismatch = optimizer_mismatch(path, saved, raw_optimizer, self.args)
        if mismatch is not None:
            raise ResumeError(mismatch)
        # under FSDP the full state is loaded into this process's shard
        from statetrain.checkpoint.fsdp import load_optimizer_state  # FSDP/DeepSpeed code loads when used

        load_optimizer_state(run.model, raw_optimizer, saved)
        run.lr_scheduler.load_state_dict(load_tree(path, "scheduler"))
        if self.accelerator.scaler is not None:
            self.accelerator.scaler.load_state_dict(load_tree(path, "scaler"))

    def _load_checkpointables(self, path: Path, run: Run) -> None:
        """Restore what custom states registered; a checkpoint without one of them is refused by name."""
        for key, obj in run.checkpointables.items():
            stem = f"{CHECKPOINTABLE_PREFIX}{key}"
            try:
                tree = load_tree(path, stem, map_location=self.args.device)
            except FileNotFoundError as exc:
                raise ResumeError(
                    f"{path} holds no state for checkpointable {key!r} ({type(obj).__name__}), which a state "
                    f"of this machine registered: was the checkpoint written by a different machine? ({exc})"
                ) from exc
            obj.load_state_dict(tree)

    def _load_rng(self, path: Path) -> dict[str, Any]:
        return load_rng_state(path, rank=self.args.process_index if self.args.world_size > 1 else None)

    def _finish_checkpoints(self) -> None:
        """End of training: load the best weights when ``load_best_model_at_end`` asks for them.

        With ``save_total_limit=1`` only the best checkpoint stays, as in HF: during training the
        newest was kept beside it to resume from, and the run has now ended. The pushes to the Hub
        still running are waited for first, so no folder is removed while it is being uploaded.
        """
        self._finish_current_push()
        best = self.state.best_model_checkpoint
        if best is None:
            return
        output_dir = Path(self.args.output_dir)
        if self.args.load_best_model_at_end:
            folder = resolve_best_checkpoint(output_dir, best)
            logger.info("loading the best model from %s (score %s)", folder, self.state.best_metric)
            load_model_weights(self.accelerator.unwrap_model(self.model), folder)
        if self.args.should_save and self.args.save_total_limit == 1:
            try:
                kept = resolve_best_checkpoint(output_dir, best)
            except CheckpointError as exc:  # not this run's verified folder: delete nothing
                logger.warning("save_total_limit=1: keeping every checkpoint, the best one is unusable: %s", exc)
                return
            rotate_checkpoints(output_dir, 1, [kept], keep_newest=False)
