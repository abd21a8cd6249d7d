"""Publishing to the Hugging Face Hub: ``init_hf_repo``, ``create_model_card``, ``push_to_hub``.

Through ``huggingface_hub`` (the ``hub`` extra), as HF does. With ``push_to_hub=True`` the
repository is created when the Trainer is built, so an unreachable Hub or a missing token fails
before any training time is spent, with an error that names the repository and the cause.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from statetrain.context.state import TrainerState


class HubError(RuntimeError):
    """The Hub could not be used; the message names the repository and what went wrong."""


def _hub_api() -> Any:
    try:
        from huggingface_hub import HfApi
    except ImportError as exc:  # pragma: no cover - the dev extra installs it
        raise ImportError(
            "push_to_hub needs huggingface_hub: pip install 'statetrain[hub]' (or huggingface_hub)"
        ) from exc
    return HfApi()


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

        def is_world_process_zero(self) -> bool: ...
        def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None: ...
        def _fire(self, event: Any, **payload: Any) -> dict[str, Any]: ...

    def init_hf_repo(self, token: str | None = None, private: bool | None = None) -> None:
        """Create (or find) the Hub repository ``hub_model_id`` (default: the output folder's name)."""
        if not self.is_world_process_zero():
            return
        name = self.args.hub_model_id or Path(self.args.output_dir).absolute().name
        token = token if token is not None else self.args.hub_token
        private = private if private is not None else self.args.hub_private_repo
        try:
            url = _hub_api().create_repo(name, token=token, private=private, exist_ok=True)
        except Exception as exc:  # any hub failure (offline, auth, network) stops here, before training
            raise HubError(
                f"push_to_hub: could not create or reach the Hub repository {name!r} "
                f"({type(exc).__name__}: {exc}). Check the network and your token (hub_token or `hf auth login`), "
                "or set push_to_hub=False"
            ) from exc
        self.hub_model_id = url.repo_id

    def _warn_no_checkpoint_pushes(self) -> None:
        """HF pushes during training per ``hub_strategy``; this version pushes only when asked (say so)."""
        strategy = str(getattr(self.args.hub_strategy, "value", self.args.hub_strategy))
        if strategy != "end":
            warnings.warn(
                f"push_to_hub=True with hub_strategy={strategy!r}: statetrain does not push checkpoints during "
                "training yet; save_model() and push_to_hub() push the final model (call trainer.push_to_hub() "
                "at the end), and hub_strategy='end' silences this warning",
                UserWarning,
                stacklevel=3,
            )

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
        try:
            return _hub_api().upload_folder(
                repo_id=self.hub_model_id,
                folder_path=self.args.output_dir,
                commit_message=commit_message,
                token=token if token is not None else self.args.hub_token,
                run_as_future=not blocking,
                revision=revision if revision is not None else self.args.hub_revision,
                ignore_patterns=["_*", "checkpoint-*/**"],
            )
        except Exception as exc:
            raise HubError(
                f"push_to_hub: uploading {self.args.output_dir} to {self.hub_model_id!r} failed: {exc}"
            ) from exc
