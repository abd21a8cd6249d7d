"""The ``Trainer`` facade: HF's constructor and methods, assembling the default machine.

It builds the parts (accelerator, data, optimizer, schedule, bus), keeps HF's overridable methods
(``training_step``, ``compute_loss``, ``get_train_dataloader``...), and hands a :class:`Run` to the
generic driver. The loop itself lives in the states; nothing here decides the flow.
"""

from __future__ import annotations

import inspect
import logging
import warnings
from collections.abc import Callable
from typing import Any

import torch
from accelerate.utils import DistributedType
from torch import nn
from torch.utils.data import DataLoader

from statetrain.args.support import check_supported_arguments
from statetrain.args.training_args import TrainingArguments
from statetrain.callbacks.flow import DefaultFlowCallback
from statetrain.callbacks.progress import PrinterCallback, ProgressCallback
from statetrain.callbacks.reporting import reporting_callbacks
from statetrain.checkpoint.processes import hold_output_dir
from statetrain.checkpoint.rng import restore_rng_state
from statetrain.context.memory import MemoryTracker
from statetrain.context.metrics import TrainOutput, speed_metrics
from statetrain.context.preemption import TrainingPreempted, preemption_handlers
from statetrain.context.run import Run, TrainingPlan
from statetrain.context.state import EngineState, TrainerControl, TrainerState
from statetrain.data.batches import (
    default_data_collator,
    set_seed,
)
from statetrain.data.padding import default_collator_for
from statetrain.data.row_checks import check_train_rows
from statetrain.data.shard_bypass import shard_is_plain
from statetrain.distributed.accelerator import lomo_check_only_when_imported
from statetrain.distributed.plugins import configure_ddp
from statetrain.distributed.processes import agree_on_checkpoint
from statetrain.engine.default_machine import default_machine
from statetrain.engine.driver import drive
from statetrain.engine.feature_checks import check_features_have_states
from statetrain.engine.machine import MachineSpec
from statetrain.engine.plan import plan_training
from statetrain.events.bus import EventBus
from statetrain.events.event import Event
from statetrain.optim.fused import steps_in_backward
from statetrain.optim.grad_clearing import GradClearer
from statetrain.optim.loss import (
    LabelSmoother,
    NanInfGuard,
    WindowWeights,
    is_causal_lm,
    loss_shifts_labels,
)
from statetrain.optim.plain_step import configure_step_shortcuts
from statetrain.trainer.batch_size_search import resume_batch_size, run_with_batch_size_search
from statetrain.trainer.callbacks import CallbackMixin
from statetrain.trainer.checkpoints import CheckpointMixin, load_model_weights
from statetrain.trainer.evaluation import EvaluationMixin, can_return_loss
from statetrain.trainer.helpers import IntrospectionMixin, ReportingMixin
from statetrain.trainer.hp_search import HyperparameterSearchMixin
from statetrain.trainer.hub import HubMixin, PushInProgress
from statetrain.trainer.model_options import (
    align_special_tokens,
    check_model_options,
    compile_model,
    enable_activation_checkpointing,
    neftune,
    reject_bare_base_model,
    reject_untrainable_quantized,
)
from statetrain.trainer.optimization import OptimizationMixin
from statetrain.trainer.training_data import TrainingDataMixin
from statetrain.trainer.training_step import FlopsSource, TrainingStepMixin

logger = logging.getLogger(__name__)


class Trainer(
    TrainingStepMixin,
    TrainingDataMixin,
    OptimizationMixin,
    EvaluationMixin,
    CheckpointMixin,
    HyperparameterSearchMixin,
    CallbackMixin,
    ReportingMixin,
    IntrospectionMixin,
    HubMixin,
):
    """Drop-in for ``transformers.Trainer``: same constructor, methods and callback protocol."""

    loss_is_scaled_for_ga: bool | None = None
    """Whether ``compute_loss`` already divides by the accumulation (HF's; ``None``: decided per model)."""

    def __init__(
        self,
        model: nn.Module | None = None,
        args: TrainingArguments | None = None,
        data_collator: Callable[[list[Any]], Any] | None = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        processing_class: Any = None,
        model_init: Callable[..., nn.Module] | None = None,
        compute_loss_func: Callable[..., torch.Tensor] | None = None,
        compute_metrics: Callable[[Any], dict[str, float]] | None = None,
        callbacks: list[Any] | None = None,
        optimizers: tuple[torch.optim.Optimizer | None, Any] = (None, None),
        optimizer_cls_and_kwargs: tuple[type[torch.optim.Optimizer], dict[str, Any]] | None = None,
        preprocess_logits_for_metrics: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        machine: MachineSpec | None = None,
    ) -> None:
        if args is None:
            args = TrainingArguments(output_dir="tmp_trainer")
        self.args = args
        check_supported_arguments(args)
        self._memory_tracker = MemoryTracker(enabled=not args.skip_memory_metrics)
        self._memory_tracker.start("init")
        set_seed(args.seed, deterministic=bool(args.full_determinism))
        self._set_up_backend(args)
        self._set_up_model(model, model_init)

        self.processing_class = processing_class
        self.data_collator = data_collator if data_collator is not None else default_collator_for(processing_class)
        self.train_dataset = train_dataset
        self.eval_dataset = eval_dataset
        self.compute_loss_func = compute_loss_func
        self.compute_metrics = compute_metrics
        self.preprocess_logits_for_metrics = preprocess_logits_for_metrics
        self.loss_is_scaled_for_ga: bool | None = None
        # the current window's item weights for models that cannot be told the window (see training_step)
        self._window_weights: WindowWeights | None = None
        self.nan_inf_guard = NanInfGuard()
        self._initial_num_input_tokens_seen = 0
        self._tokens_seen_run: Run | None = None
        self._token_count_warnings: set[str] = set()
        self._flos_parameters: FlopsSource | None = None

        self._check_evaluation_setup()
        self._set_up_optimizers(optimizers, optimizer_cls_and_kwargs)
        self._set_up_callbacks(callbacks)

        self.machine = machine if machine is not None else default_machine()
        self.machine.validate()
        check_features_have_states(args, self.machine)

        self.state = TrainerState(
            is_local_process_zero=self.is_local_process_zero(),
            is_world_process_zero=self.is_world_process_zero(),
        )
        self.control = TrainerControl()
        self.current_gradient_accumulation_steps = 1
        self._plain_train_modules: list[nn.Module] | None = None
        self.current_flos = 0.0
        self.is_in_train = False
        self._signature_columns: list[str] | None = None
        self._train_batch_size = args.train_batch_size
        self.hub_model_id: str | None = None
        self.push_in_progress: PushInProgress | None = None  # uploads started by checkpoint saves (HF's name)
        if args.push_to_hub:
            self.init_hf_repo()  # an unreachable Hub fails here, before any training (HF)
        self.fast_path = True  # False: full transitions triggers and accelerate's wrappers (same run)
        self.control = self.bus.fire(Event.ON_INIT_END, args, self.state, self.control, self.callback_refs)
        self._memory_tracker.stop("init")

    def _set_up_backend(self, args: TrainingArguments) -> None:
        """The accelerator and HF's flags about it (read by callbacks and the DeepSpeed/FSDP branches)."""
        self.create_accelerator_and_postprocess()
        # read once: TrainingArguments derives these from accelerate's state on every access
        self._device, self._n_gpu, self._world_size = args.device, args.n_gpu, args.world_size
        self._wrap_backward_with_events()
        self._wrap_compute_loss_with_events()

    def _set_up_model(self, model: nn.Module | None, model_init: Callable[..., nn.Module] | None) -> None:
        """HF's model-or-model_init rule, then the model on the device and read once."""
        if model is None:
            if model_init is None:
                raise RuntimeError("Trainer requires either a `model` or a `model_init` argument")
            self.model_init: Callable[..., nn.Module] | None = model_init
            model = self.call_model_init()
        elif model_init is not None:
            raise ValueError("Trainer requires either a `model` or a `model_init` argument, not both")
        else:
            self.model_init = None
        reject_bare_base_model(model)
        reject_untrainable_quantized(model)
        self.model = model.to(self.args.device)
        self.model_wrapped = self.model
        self._inspect_model(self.model)
        check_model_options(self.model, self.args)

    def _set_up_optimizers(
        self,
        optimizers: tuple[torch.optim.Optimizer | None, Any],
        optimizer_cls_and_kwargs: tuple[type[torch.optim.Optimizer], dict[str, Any]] | None,
    ) -> None:
        """A given optimizer and schedule, or what ``create_optimizer_and_scheduler`` will build."""
        self.optimizer, self.lr_scheduler = optimizers
        self._optimizer_given = optimizers[0] is not None
        if optimizer_cls_and_kwargs is not None and self.optimizer is not None:
            raise ValueError("Pass either `optimizers` (a built optimizer) or `optimizer_cls_and_kwargs`, not both")
        if self.model_init is not None and (self.optimizer is not None or self.lr_scheduler is not None):
            raise RuntimeError(
                "model_init cannot be combined with `optimizers`: a fresh model needs a fresh optimizer; "
                "override create_optimizer_and_scheduler instead"
            )
        self.optimizer_cls_and_kwargs = optimizer_cls_and_kwargs
        self._created_lr_scheduler = False

    def _set_up_callbacks(self, callbacks: list[Any] | None) -> None:
        """The bus with HF's default callbacks around the user's, and the references handlers get."""
        self.bus = EventBus()
        self.callback_refs: dict[str, Any] = {
            "model": self.model,
            "processing_class": self.processing_class,
            "optimizer": self.optimizer,
            "lr_scheduler": self.lr_scheduler,
            "train_dataloader": None,
            "eval_dataloader": None,
        }
        self.bus.refs = self.callback_refs  # the same dict: what the Trainer updates, handlers called by name see
        # HF's order: the flow, the report_to integrations, then the user's callbacks
        for callback in [DefaultFlowCallback, *reporting_callbacks(self.args.report_to), *(callbacks or [])]:
            self.bus.add_callback(callback)
        self.bus.add_callback(PrinterCallback if self.args.disable_tqdm else ProgressCallback)

    def _check_evaluation_setup(self) -> None:
        """HF's constructor checks for evaluation, with the field named in each message."""
        args = self.args
        batched = args.batch_eval_metrics and self.compute_metrics is not None
        if batched and "compute_result" not in inspect.signature(self.compute_metrics).parameters:
            raise ValueError(
                "TrainingArguments.batch_eval_metrics is set, so compute_metrics must accept a "
                "`compute_result` argument (True after the last batch, when it returns the summary)"
            )
        strategy = str(getattr(args.eval_strategy, "value", args.eval_strategy))
        if strategy != "no" and self.eval_dataset is None:
            raise ValueError(
                f"TrainingArguments.eval_strategy is {strategy!r} but no eval_dataset was given to the "
                "Trainer; pass an eval_dataset or set eval_strategy='no'"
            )
        save = str(getattr(args.save_strategy, "value", args.save_strategy))
        if (save == "best" or args.load_best_model_at_end) and args.metric_for_best_model is None:
            raise ValueError(
                "`args.metric_for_best_model` must be provided when using 'best' save_strategy or if "
                "`args.load_best_model_at_end` is set to `True` (TrainingArguments.metric_for_best_model)"
            )

    # --- model introspection ------------------------------------------------------------------
    def call_model_init(self, trial: Any = None) -> nn.Module:
        assert self.model_init is not None
        count = len(inspect.signature(self.model_init).parameters)
        if count > 1:
            raise RuntimeError(f"model_init must take 0 or 1 argument (the trial), it takes {count}")
        model = self.model_init() if count == 0 else self.model_init(trial)
        if model is None:
            raise RuntimeError("model_init returned None")
        return model

    def _inspect_model(self, model: nn.Module) -> None:
        """Loss kwargs, label names and the causal shift, read once from the model (HF rules)."""
        if hasattr(model, "accepts_loss_kwargs"):
            self.model_accepts_loss_kwargs = bool(model.accepts_loss_kwargs)
        else:
            params = inspect.signature(model.forward).parameters.values()
            self.model_accepts_loss_kwargs = any(p.kind == p.VAR_KEYWORD for p in params)
        names = list(inspect.signature(type(model).forward).parameters)
        if "QuestionAnswering" in type(model).__name__:
            default_labels = [p for p in names if "label" in p or p in ("start_positions", "end_positions")]
        else:
            default_labels = [p for p in names if "label" in p]
        self.label_names = list(self.args.label_names) if self.args.label_names is not None else default_labels
        self.can_return_loss = can_return_loss(type(model))
        config = getattr(model, "config", None)
        self._loss_shifts_labels = loss_shifts_labels(model)
        self.label_smoother: LabelSmoother | None = None
        if self.args.label_smoothing_factor != 0:
            if getattr(config, "problem_type", None) == "multi_label_classification":
                warnings.warn(
                    "Label smoothing is not compatible with multi-label classification; "
                    "label_smoothing_factor is ignored for this model",
                    UserWarning,
                    stacklevel=3,
                )
            else:
                self.label_smoother = LabelSmoother(epsilon=self.args.label_smoothing_factor)
        # HF shifts the smoothed loss's labels for the registered causal-LM classes
        self._label_smoother_shifts = is_causal_lm(model)

    # --- callbacks ----------------------------------------------------------------------------
    # --- process roles ------------------------------------------------------------------------
    def is_local_process_zero(self) -> bool:
        return bool(self.args.local_process_index == 0)

    def is_world_process_zero(self) -> bool:
        return bool(self.args.process_index == 0)

    # --- training -----------------------------------------------------------------------------
    def train(
        self,
        resume_from_checkpoint: str | bool | None = None,
        trial: Any = None,
        ignore_keys_for_eval: list[str] | None = None,
    ) -> TrainOutput:
        """Run the machine from ``init`` to ``done``; returns ``TrainOutput`` with HF's metric names.

        The run holds an exclusive lock on ``output_dir`` throughout (one run per folder).
        """
        self._hp_search_setup(trial)  # first: a trial may change the seed, as in HF
        with hold_output_dir(self.args):
            return self._train(resume_from_checkpoint, trial, ignore_keys_for_eval)

    def _train(
        self, resume_from_checkpoint: str | bool | None, trial: Any, ignore_keys_for_eval: list[str] | None
    ) -> TrainOutput:
        args = self.args
        self._begin_train_call()
        checkpoint = None
        if resume_from_checkpoint not in (None, False):
            # verified once per copy of the files; with several processes, they must agree (or all fail)
            checkpoint = agree_on_checkpoint(
                args,
                lambda: self._resolve_checkpoint(resume_from_checkpoint),  # type: ignore[arg-type]
                lambda name: self._locate_checkpoint(resume_from_checkpoint, name),  # type: ignore[arg-type]
            )
        self.is_in_train = True
        if self.model_init is not None:
            set_seed(args.seed, deterministic=bool(args.full_determinism))
            self.model = self.call_model_init(trial).to(args.device)
            self.model_wrapped = self.model
            self._inspect_model(self.model)
            self.optimizer, self.lr_scheduler = None, None
        if self._created_lr_scheduler:
            self.lr_scheduler = None
            self._created_lr_scheduler = False
        if checkpoint is not None:
            resume_batch_size(self, checkpoint)  # a batch size the run itself found is not a change
            self._check_resume_compatible(checkpoint)  # refuse before anything of this Trainer changes
            load_model_weights(self.model, checkpoint)  # before prepare, as HF
        enable_activation_checkpointing(self.model, args)
        align_special_tokens(self.model, self.processing_class)  # new fine-tuning tokens reach the configs

        def attempt() -> Run:
            """One run at ``self._train_batch_size``; ``auto_find_batch_size`` repeats it smaller on OOM."""
            train_dataloader = self._train_dataloader_for_machine()
            plan = plan_training(args, train_dataloader, self._train_batch_size, self.num_examples)
            self.state = TrainerState(train_batch_size=self._train_batch_size)
            self.state.compute_steps(args, plan.max_steps)
            engine = EngineState()
            if checkpoint is not None:
                self.state, engine = self._load_checkpoint_state(checkpoint, plan)
                plan = self._resumed_plan(checkpoint, plan, engine)
            self.state.max_steps = plan.max_steps  # a larger budget extends the run
            self.state.num_train_epochs = plan.num_train_epochs
            self.state.is_local_process_zero = self.is_local_process_zero()
            self.state.is_world_process_zero = self.is_world_process_zero()
            self._record_trial(self.state, trial)
            run = Run(self, plan, self.state, engine)
            run.ignore_keys_for_eval = ignore_keys_for_eval
            if checkpoint is not None:
                self._restore_callback_states(self.state)
                run.resuming = not args.ignore_data_skip
                if args.ignore_data_skip:
                    engine.batches_in_epoch = 0
                run.pending_rng = self._load_rng(checkpoint)
            self._prepare_run(run, train_dataloader)
            for machine_state in self.machine.states.values():
                machine_state.setup(run)
            if checkpoint is not None:
                self._load_optimizer_and_schedule(checkpoint, run)
                self._load_checkpointables(checkpoint, run)
            self._run = run
            if run.pending_rng is not None and train_dataloader is None:
                restore_rng_state(run.pending_rng)  # no epoch state will: restore before the first state
                run.pending_rng = None
            with preemption_handlers(run.preemption):
                self._drive(run)
            return run

        try:
            with neftune(self.model, args.neftune_noise_alpha):  # the hook goes even when training fails
                run = run_with_batch_size_search(self, attempt)
        finally:
            self.is_in_train = False
            self._memory_tracker.stop("train")  # a run that raised: the next stage is measured alone
        if run.preempted_checkpoint is not None:
            raise TrainingPreempted(run.preemption.signal_name, run.preempted_checkpoint, self.state.global_step)
        assert isinstance(run.output, TrainOutput)
        return run.output

    def _begin_train_call(self) -> None:
        self._memory_tracker.start("train")
        self.bus.refresh()  # handlers assigned on a callback instance since it was added

    def _drive(self, run: Run) -> None:
        """Run the machine on ``run`` (compiled exits on the fast path, full triggers otherwise)."""
        drive(self.machine, run, compiled=self.fast_path)

    @property
    def run_context(self) -> Run | None:
        """The current (or last) ``train()`` call's run context: what the states read and wrote
        (``custom_state``, ``checkpointables``, the live optimizer and schedule); ``None`` before one."""
        return getattr(self, "_run", None)

    @property
    def plan(self) -> TrainingPlan | None:
        """The current (or last) ``train()`` call's plan: epochs, windows, steps; ``None`` before one."""
        run = getattr(self, "_run", None)
        return run.plan if run is not None else None

    def _train_dataloader_for_machine(self) -> DataLoader[Any] | None:
        """The training loader, or ``None`` for a machine none of whose states reads training data."""
        if self.train_dataset is None and not any(s.needs_train_data for s in self.machine.states.values()):
            return None
        if self.train_dataset is None:
            readers = sorted(n for n, s in self.machine.states.items() if s.needs_train_data)
            raise ValueError(
                f"Trainer: training requires a train_dataset (the machine's states {readers} read training data)."
            )
        check_train_rows(self.train_dataset, self.model, self.label_names, self.data_collator is default_data_collator)
        return self.get_train_dataloader()

    def _prepare_run(self, run: Run, train_dataloader: Any) -> None:
        """Optimizer, ``accelerator.prepare``, schedule; then the fast paths the configuration allows."""
        from accelerate.optimizer import AcceleratedOptimizer

        self._log_training_banner(run.plan, self.state.global_step or None)
        self._reclaim_optimizer()  # what a previous train() prepared
        self.create_optimizer()
        configure_ddp(self.accelerator, self.args, self.model)  # HF's ddp_* options, which depend on the model
        with lomo_check_only_when_imported():
            model, optimizer = self.accelerator.prepare(self.model, self.optimizer)
        model = compile_model(model, self.args)  # last, on the prepared model, as accelerate does
        self.optimizer = optimizer
        self.model_wrapped = model
        if self.is_deepspeed_enabled:
            self.deepspeed = model
        run.model = model
        run.optimizer = optimizer
        run.train_dataloader = train_dataloader
        run.zero_grad = GradClearer(model, listed=self.fast_path)
        run.plain_loader = self.fast_path and shard_is_plain(train_dataloader, self.accelerator)
        run.scaler_in_use = self.accelerator.scaler is not None
        # DeepSpeed steps inside backward and may skip an overflowing step itself (fp16)
        run.steps_may_be_skipped = run.scaler_in_use or self.is_deepspeed_enabled
        run.defer_gradient_sync = self.accelerator.num_processes > 1 and not self.is_deepspeed_enabled
        # accelerate's optimizer wrapper only adds work unless it serves a grad scaler or XLA: step the inner one
        direct = (
            self.fast_path
            and isinstance(optimizer, AcceleratedOptimizer)
            and not run.scaler_in_use
            and self.accelerator.distributed_type not in (DistributedType.XLA, DistributedType.DEEPSPEED)
            and not steps_in_backward(optimizer.optimizer)
        )
        run.step_optimizer = optimizer.optimizer if direct else optimizer
        # The schedule binds to the object that is stepped, so torch sees its steps in order.
        self.create_scheduler(run.plan.max_steps, optimizer=run.step_optimizer)
        run.lr_scheduler = self.lr_scheduler
        run.schedule_per_step = not self._scheduler_steps_on_metrics
        raw = getattr(optimizer, "optimizer", optimizer)
        self._optimizer_train_mode = callable(getattr(raw, "train", None))
        self._choose_backward_kwargs()
        # HF calls model.train() every micro-batch; with no train() override, checking the flags gives the same
        modules = list(model.modules())
        self._plain_train_modules = modules if all(type(m).train is nn.Module.train for m in modules) else None
        configure_step_shortcuts(self, run, TrainingStepMixin)
        self.callback_refs.update(
            model=self.model,
            optimizer=self.optimizer,
            lr_scheduler=self.lr_scheduler,
            train_dataloader=train_dataloader,
        )

    def log(self, logs: dict[str, Any], start_time: float | None = None) -> None:
        """Append ``logs`` (+ epoch, tokens seen, step) to ``state.log_history`` and fire ``on_log``.

        With ``start_time`` (the training logs) and token counting on, the tokens per second of
        this ``train()`` call are added, as HF does.
        """
        if self.state.epoch is not None:
            logs["epoch"] = self.state.epoch
        if self.args.include_num_input_tokens_seen != "no":
            logs["num_input_tokens_seen"] = self.state.num_input_tokens_seen
            if start_time is not None:
                session_tokens = self.state.num_input_tokens_seen - self._initial_num_input_tokens_seen
                logs.update(speed_metrics("train", start_time, num_tokens=session_tokens))
        self.state.log_history.append({**logs, "step": self.state.global_step})
        self._fire(Event.ON_LOG, logs=logs)
