"""Publishing to the Hugging Face Hub: ``init_hf_repo``, ``create_model_card``, ``push_to_hub``, pushes per save.

Through ``huggingface_hub`` (the ``hub`` extra), as HF does. With ``push_to_hub=True`` the
repository is created when the Trainer is built, so an unreachable Hub or a missing token fails
before any training time is spent, with an error that names the repository and the cause.

During training every checkpoint save pushes in the background as HF's ``hub_strategy`` says: the
model files are copied from the checkpoint into ``output_dir``, which is uploaded (checkpoints and
statetrain's scratch folders left out); ``checkpoint`` also uploads the checkpoint folder as
``last-checkpoint``, ``all_checkpoints`` under its own name. A push still running when the next save
comes is not doubled unless ``hub_always_push``. An upload that fails does not stop training (as in
HF); it is reported with a :class:`HubPushWarning` naming the repository at the next save or at the
end of training, which waits for the pushes still running.
"""

from __future__ import annotations

import concurrent.futures
import logging
import shutil
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from statetrain.checkpoint.contents import ARGS_NAME, MODEL_NAME
from statetrain.checkpoint.model_files import processor_to_save
from statetrain.checkpoint.output_lock import LOCK_NAME
from statetrain.checkpoint.peft_adapter import ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME
from statetrain.checkpoint.store import PREFIX, SCRATCH_PATTERNS

if TYPE_CHECKING:
    from statetrain.context.state import TrainerState

logger = logging.getLogger(__name__)

HUB_IGNORE_PATTERNS = ("_*", f"{PREFIX}-*", LOCK_NAME, *SCRATCH_PATTERNS)
"""What an upload of ``output_dir`` leaves out: HF's patterns, then statetrain's lock and scratch folders."""

MODEL_FILES = ("config.json", "generation_config.json", MODEL_NAME, ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME)
"""The final-model files a push copies from the checkpoint into ``output_dir`` (HF's list, pickles aside)."""


class HubError(RuntimeError):
    """The Hub could not be used; the message names the repository and what went wrong."""


class HubPushWarning(UserWarning):
    """A push started during training failed; training went on (as in HF) and the message says what was lost."""


class PushInProgress:
    """HF's record of the uploads still running (``jobs``, futures), plus what each one uploads.

    The labels let a failed upload be reported by repository and commit message once it is done.
    """

    def __init__(self) -> None:
        self.jobs: list[concurrent.futures.Future[Any]] = []
        self._labels: dict[concurrent.futures.Future[Any], str] = {}

    def add(self, job: concurrent.futures.Future[Any], label: str) -> None:
        self.jobs.append(job)
        self._labels[job] = label

    def is_done(self) -> bool:
        return all(job.done() for job in self.jobs)

    def wait_until_done(self) -> None:
        concurrent.futures.wait(self.jobs)

    def take_failures(self) -> list[str]:
        """The finished uploads that raised, each reported once: ``"<label> failed: <error>"``."""
        failures = []
        for job, label in list(self._labels.items()):
            if job.done():
                del self._labels[job]
                error = None if job.cancelled() else job.exception()
                if error is not None:
                    failures.append(f"{label} failed: {type(error).__name__}: {error}")
        return failures


def _hub_api() -> Any:
    try:
        from huggingface_hub import HfApi
    except ImportError as exc:  # pragma: no cover - the dev extra installs it
        raise ImportError(
            "push_to_hub needs huggingface_hub: pip install 'statetrain[hub]' (or huggingface_hub)"
        ) from exc
    from statetrain import __version__

    return HfApi(library_name="statetrain", library_version=__version__)


def _plain(value: Any) -> str:
    return str(getattr(value, "value", value))


def _as_list(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def model_card_text(state: TrainerState, args: Any, model_name: str, **meta: Any) -> str:
    """A draft README.md: YAML metadata, the hyper-parameters and the evaluation results logged."""
    header = ["---", "library_name: statetrain"]
    for key in ("language", "license", "tags", "datasets", "base_model"):
        values = _as_list(meta.get(key))
        if values:
            header.append(f"{key}:")
            header.extend(f"- {v}" for v in values)
    header.append("---")
    lines = [*header, "", f"# {model_name}", ""]
    if meta.get("base_model"):
        lines.append(f"This model is a fine-tuned version of {meta['base_model']}.")
        lines.append("")
    lines += ["## Training hyperparameters", ""]
    for key in (
        "learning_rate",
        "per_device_train_batch_size",
        "per_device_eval_batch_size",
        "seed",
        "gradient_accumulation_steps",
        "optim",
        "lr_scheduler_type",
        "num_train_epochs",
        "max_steps",
    ):
        lines.append(f"- {key}: {getattr(getattr(args, key), 'value', getattr(args, key))}")
    evals = [entry for entry in state.log_history if any(k.startswith("eval_") for k in entry)]
    if evals:
        lines += ["", "## Evaluation results", ""]
        for key, value in sorted(evals[-1].items()):
            lines.append(f"- {key}: {value}")
    return "\n".join(lines) + "\n"


class HubMixin:
    """HF's Hub methods, mixed into the Trainer."""

    if TYPE_CHECKING:  # what the Trainer provides
        args: Any
        state: TrainerState
        model: Any
        control: Any
        hub_model_id: str | None
        processing_class: Any
        data_collator: Any
        push_in_progress: PushInProgress | None

        def is_world_process_zero(self) -> bool: ...
        def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None: ...
        def _fire(self, event: Any, **payload: Any) -> dict[str, Any]: ...

    _hub_client: Any = None
    """This trainer's ``HfApi``: one per trainer, so its background uploads run one after another."""

    def _hub(self) -> Any:
        if self._hub_client is None:
            self._hub_client = _hub_api()
        return self._hub_client

    def init_hf_repo(self, token: str | None = None, private: bool | None = None) -> None:
        """Create (or find) the Hub repository ``hub_model_id`` (default: the output folder's name)."""
        if not self.is_world_process_zero():
            return
        name = self.args.hub_model_id or Path(self.args.output_dir).absolute().name
        token = token if token is not None else self.args.hub_token
        private = private if private is not None else self.args.hub_private_repo
        try:
            url = self._hub().create_repo(name, token=token, private=private, exist_ok=True)
        except Exception as exc:  # any hub failure (offline, auth, network) stops here, before training
            raise HubError(
                f"push_to_hub: could not create or reach the Hub repository {name!r} "
                f"({type(exc).__name__}: {exc}). Check the network and your token (hub_token or `hf auth login`), "
                "or set push_to_hub=False"
            ) from exc
        self.hub_model_id = url.repo_id
        self.push_in_progress = None

    def create_model_card(
        self,
        language: str | None = None,
        license: str | None = None,
        tags: str | list[str] | None = None,
        model_name: str | None = None,
        finetuned_from: str | None = None,
        tasks: str | list[str] | None = None,
        dataset_tags: str | list[str] | None = None,
        dataset: str | list[str] | None = None,
        dataset_args: str | list[str] | None = None,
    ) -> None:
        """Write a draft ``README.md`` model card into ``output_dir``."""
        del tasks, dataset_args  # HF puts them in the card's model-index, which needs results per task
        if not self.is_world_process_zero():
            return
        folder = Path(self.args.output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        name = model_name or Path(self.args.output_dir).absolute().name
        base = finetuned_from or getattr(getattr(self.model, "config", None), "_name_or_path", None) or None
        text = model_card_text(
            self.state,
            self.args,
            name,
            language=language,
            license=license,
            tags=_as_list(tags),
            datasets=_as_list(dataset_tags) or _as_list(dataset),
            base_model=base if base and not Path(str(base)).exists() else None,
        )
        (folder / "README.md").write_text(text, encoding="utf-8")

    def push_to_hub(
        self,
        commit_message: str | None = "End of training",
        blocking: bool = True,
        token: str | None = None,
        revision: str | None = None,
        private: bool | None = None,
        **kwargs: Any,
    ) -> Any:
        """Save the model and a model card into ``output_dir`` and upload the folder (checkpoints excluded)."""
        from statetrain.events.event import Event

        self._fire(Event.ON_PUSH_BEGIN)
        model_name = kwargs.pop("model_name", None)
        if model_name is None and self.args.should_save:
            model_name = self.args.hub_model_id or Path(self.args.output_dir).name
            model_name = model_name.split("/")[-1]
        if self.hub_model_id is None:
            self.init_hf_repo(token=token, private=private)
        self.save_model(_internal_call=True)
        if not self.is_world_process_zero():
            return None
        self.create_model_card(model_name=model_name, **kwargs)
        self._finish_current_push()  # the pushes of training first, so this commit comes last
        try:
            return self._hub().upload_folder(
                repo_id=self.hub_model_id,
                folder_path=self.args.output_dir,
                commit_message=commit_message,
                token=token if token is not None else self.args.hub_token,
                run_as_future=not blocking,
                revision=revision if revision is not None else self.args.hub_revision,
                ignore_patterns=list(HUB_IGNORE_PATTERNS),
            )
        except Exception as exc:
            raise HubError(
                f"push_to_hub: uploading {self.args.output_dir} to {self.hub_model_id!r} failed: {exc}"
            ) from exc

    def _push_from_checkpoint(self, checkpoint_folder: str | Path) -> None:
        """After a checkpoint save: push the model (and, per ``hub_strategy``, the checkpoint) in the background.

        The model files are copied from the checkpoint rather than gathered again, as HF does; the
        processing class and ``training_args.json`` are written afresh.
        """
        from statetrain.events.event import Event

        strategy = _plain(self.args.hub_strategy)
        if not self.is_world_process_zero() or strategy == "end":
            return
        pending = self.push_in_progress
        if pending is not None:
            finished = pending.is_done()  # read before reporting, so a job ending meanwhile is not lost
            self._warn_failed_pushes(pending)
            if finished:
                pending = None
            elif not self.args.hub_always_push:
                return  # the last push is still running: this save is not pushed (HF)
        self._fire(Event.ON_PUSH_BEGIN)
        checkpoint, output_dir = Path(checkpoint_folder), Path(self.args.output_dir)
        for name in MODEL_FILES:
            if (checkpoint / name).is_file():
                shutil.copy(checkpoint / name, output_dir / name)
        processor = processor_to_save(self.processing_class, self.data_collator)
        if callable(getattr(processor, "save_pretrained", None)):
            processor.save_pretrained(str(output_dir))
        (output_dir / ARGS_NAME).write_text(self.args.to_json_string(), encoding="utf-8")
        if _plain(self.args.save_strategy) == "steps":
            message = f"Training in progress, step {self.state.global_step}"
        else:
            message = f"Training in progress, epoch {int(self.state.epoch or 0)}"
        if pending is None:  # hub_always_push adds to the push still running, as HF does
            pending = self.push_in_progress = PushInProgress()
        self._upload_in_background(pending, output_dir, message, ignore_patterns=list(HUB_IGNORE_PATTERNS))
        if strategy in ("checkpoint", "all_checkpoints"):
            path_in_repo = "last-checkpoint" if strategy == "checkpoint" else checkpoint.name
            self._upload_in_background(pending, checkpoint, f"{message}, checkpoint", path_in_repo=path_in_repo)

    def _upload_in_background(self, pending: PushInProgress, folder: Path, message: str, **options: Any) -> None:
        job = self._hub().upload_folder(
            repo_id=self.hub_model_id,
            folder_path=str(folder),
            commit_message=message,
            token=self.args.hub_token,
            run_as_future=True,
            revision=self.args.hub_revision,
            **options,
        )
        pending.add(job, f"the push of {folder} to {self.hub_model_id!r} ({message!r})")

    def _finish_current_push(self) -> None:
        """Wait for the pushes still running (end of training, ``push_to_hub``), then report any that failed."""
        pending = self.push_in_progress
        if pending is None:
            return
        if not pending.is_done():
            logger.info("waiting for the push to %s to finish", self.hub_model_id)
            pending.wait_until_done()
        self._warn_failed_pushes(pending)

    def _warn_failed_pushes(self, pending: PushInProgress) -> None:
        for failure in pending.take_failures():
            warnings.warn(
                f"push_to_hub: {failure}. Training went on (as in transformers); the push was not retried, "
                "the next save or push_to_hub() uploads output_dir again",
                HubPushWarning,
                stacklevel=3,
            )
