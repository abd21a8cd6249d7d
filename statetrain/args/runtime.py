"""Device and process facts for ``TrainingArguments``, worked out from accelerate on first use.

Building the arguments must stay cheap and must not start a process group, so nothing here runs
until a property such as ``args.device`` or ``args.world_size`` is read. Unlike transformers 5.24,
a process started by a launcher (``torchrun``, ``accelerate launch``) never trains alone by
mistake: when no accelerator backend applies, the processes join over gloo on CPU, and when they
still cannot join the error says so.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from statetrain.args.enums import LOG_LEVELS, ParallelMode

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

_CACHE_KEY = "_runtime_info"
# Environment variables in which launchers publish the number of processes they started.
_WORLD_SIZE_VARIABLES = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


@dataclasses.dataclass(frozen=True)
class RuntimeSettings:
    """The arguments that decide how accelerate is set up; a change in any of them means a new setup."""

    use_cpu: bool
    ddp_backend: str | None
    ddp_timeout: int
    use_configured_state: bool
    use_deepspeed: bool = False


@dataclasses.dataclass(frozen=True)
class RuntimeInfo:
    """What one process learnt about its place in the run."""

    settings: RuntimeSettings
    state: Any  # accelerate.PartialState; typed loosely so this module imports without accelerate
    device: torch.device
    n_gpu: int
    cpu: bool

    @property
    def parallel_mode(self) -> ParallelMode:
        """HF's classification: several processes, one process driving several GPUs, or neither."""
        from accelerate.utils import DistributedType

        kind = self.state.distributed_type
        if kind == DistributedType.XLA:
            return ParallelMode.TPU
        if kind != DistributedType.NO:
            return ParallelMode.DISTRIBUTED
        if self.n_gpu > 1:
            return ParallelMode.NOT_DISTRIBUTED
        return ParallelMode.NOT_PARALLEL


def launcher_world_size() -> int:
    """The number of processes a launcher says it started (1 when none did)."""
    for name in _WORLD_SIZE_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value.isdigit():
            return int(value)
    return 1


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "y", "on", "t"}


def _partial_state(settings: RuntimeSettings, cpu: bool) -> Any:
    """Return accelerate's process state, reusing one that already matches the wanted CPU choice.

    transformers resets accelerate's global state every time; doing that lazily could pull the
    state from under an ``Accelerator`` built in between, so a matching state is kept.
    """
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType

    shared = PartialState._shared_state
    if settings.use_configured_state:
        if shared == {}:
            raise ValueError(
                "accelerator_config.use_configured_state=True needs an accelerate PartialState or "
                "Accelerator created before the TrainingArguments are used; create one first or set it "
                "to False"
            )
        state = PartialState(cpu=cpu)
        if settings.use_deepspeed and state.distributed_type != DistributedType.DEEPSPEED:
            raise RuntimeError(
                "accelerator_config.use_configured_state=True reuses an accelerate state that was not set up "
                "for DeepSpeed, but TrainingArguments.deepspeed is set; set use_configured_state=False"
            )
        return state
    if shared != {}:
        deepspeed_state = shared.get("distributed_type") == DistributedType.DEEPSPEED
        reusable = shared.get("_cpu") == cpu and deepspeed_state == (settings.use_deepspeed and not cpu)
        if reusable:
            return PartialState(cpu=cpu)
        AcceleratorState._reset_state(reset_partial_state=True)
    timeout = timedelta(seconds=settings.ddp_timeout)
    if settings.use_deepspeed and not cpu:  # use_cpu with deepspeed is refused when the plugin is built
        return _deepspeed_partial_state(settings, timeout)
    return PartialState(cpu=cpu, backend=settings.ddp_backend, timeout=timeout)


def _deepspeed_partial_state(settings: RuntimeSettings, timeout: timedelta) -> Any:
    """accelerate's process state for DeepSpeed, which joins the process group through DeepSpeed.

    As in transformers, accelerate is told through ``ACCELERATE_USE_DEEPSPEED`` while the state is
    built. On a machine without a GPU-like backend, accelerate would leave a launched process with
    a process count of one while DeepSpeed itself joins all of them (so the data would not be
    sharded): the processes join over gloo (or ``ddp_backend``) instead. A process no launcher
    started gets the one-process rendezvous that HF's docs ask notebook users to set by hand.
    """
    import torch
    from accelerate.state import PartialState

    from statetrain.args.optional_packages import require_deepspeed

    require_deepspeed()
    _one_process_rendezvous()
    backend = settings.ddp_backend
    if backend is None and not torch.cuda.is_available():
        backend = "gloo"
    previous = os.environ.get("ACCELERATE_USE_DEEPSPEED")
    os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
    try:
        return PartialState(cpu=False, backend=backend, timeout=timeout)
    finally:
        if previous is None:
            del os.environ["ACCELERATE_USE_DEEPSPEED"]
        else:
            os.environ["ACCELERATE_USE_DEEPSPEED"] = previous


_RENDEZVOUS_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def _one_process_rendezvous() -> None:
    """Publish a one-process group on a free local port when no launcher published one.

    DeepSpeed always runs in a process group; without these variables it falls back to MPI
    discovery and fails on a missing ``mpi4py``. A launcher's (even partial) settings are never touched.
    """
    if any(name in os.environ for name in (*_RENDEZVOUS_VARIABLES, *_WORLD_SIZE_VARIABLES)):
        return
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    logger.info("deepspeed: no launcher variables found; running as a one-process group on port %d", port)


def _device_and_gpu_count(state: Any, cpu: bool) -> tuple[torch.device, int]:
    """Mirror HF's choice of device and ``n_gpu`` for the state accelerate produced."""
    import torch
    from accelerate.utils import DistributedType

    device: torch.device = state.device
    if state.distributed_type == DistributedType.NO:
        if cpu:
            return torch.device("cpu"), 0
        if device.type == "cuda":
            first = torch.device("cuda:0")
            torch.cuda.set_device(first)
            return first, torch.cuda.device_count()
        return device, 0 if device.type == "cpu" else 1
    if cpu or device.type in {"cpu", "xla"}:
        return device, 0
    return device, 1


def _join(settings: RuntimeSettings, cpu: bool, launched: int) -> Any:
    """``_partial_state``, with a launcher-started process's failure to join said in those terms."""
    try:
        return _partial_state(settings, cpu)
    except Exception as exc:
        if launched <= 1:
            raise
        rank = os.environ.get("RANK", "?")
        cause = f"{type(exc).__name__}: {str(exc).rstrip('.')}"
        raise RuntimeError(
            f"this process was started by a launcher as rank {rank} of {launched} (WORLD_SIZE={launched}) but "
            f"could not join the process group: {cause}. Every process must be started "
            "with the same MASTER_ADDR and MASTER_PORT, and all of them must start within ddp_timeout "
            f"({settings.ddp_timeout} s); statetrain does not train alone in a process a launcher started"
        ) from exc


def resolve_runtime(settings: RuntimeSettings) -> RuntimeInfo:
    """Set up (or reuse) accelerate's process state and describe this process.

    Raises RuntimeError when a launcher started several processes but they could not join one
    process group, instead of letting each one train alone on the full data.
    """
    cpu = settings.use_cpu or _env_flag("ACCELERATE_USE_CPU")
    launched = launcher_world_size()
    state = _join(settings, cpu, launched)
    alone = launched > 1 and state.num_processes == 1 and state.device.type == "cpu"
    if alone and not cpu and not settings.use_deepspeed:
        # No GPU-like backend applied, so accelerate left each process on its own; gloo on CPU
        # joins them, which is what transformers 5.24 only does when use_cpu=True is given.
        cpu = True
        state = _join(settings, cpu, launched)
    if launched > 1 and state.num_processes != launched:
        raise RuntimeError(
            f"the launcher started {launched} processes (WORLD_SIZE={launched}) but accelerate set up "
            f"{state.num_processes} on {state.device}; each process would train alone. Check the launcher "
            "environment (MASTER_ADDR, MASTER_PORT, RANK) or pass use_cpu=True to join over gloo"
        )
    device, n_gpu = _device_and_gpu_count(state, cpu)
    return RuntimeInfo(settings=settings, state=state, device=device, n_gpu=n_gpu, cpu=cpu)


class ProcessFactsMixin:
    """The device/process properties of ``TrainingArguments`` (HF names), resolved on first read.

    Kept apart from the fields so the configuration class stays a plain list of settings. The
    resolved facts are cached on the instance and worked out again if ``use_cpu`` or the DDP
    settings change afterwards.
    """

    if TYPE_CHECKING:  # fields provided by TrainingArguments
        use_cpu: bool
        ddp_backend: str | None
        ddp_timeout: int
        accelerator_config: Any
        per_device_train_batch_size: int
        per_device_eval_batch_size: int
        log_on_each_node: bool
        save_on_each_node: bool
        log_level: str
        log_level_replica: str
        fp16: bool
        bf16: bool

    def _runtime(self) -> RuntimeInfo:
        settings = RuntimeSettings(
            use_cpu=self.use_cpu,
            ddp_backend=self.ddp_backend,
            ddp_timeout=self.ddp_timeout,
            use_configured_state=bool(getattr(self.accelerator_config, "use_configured_state", False)),
            use_deepspeed=bool(getattr(self, "deepspeed", None)),
        )
        cached: RuntimeInfo | None = self.__dict__.get(_CACHE_KEY)
        if cached is None or cached.settings != settings:
            cached = resolve_runtime(settings)
            self.__dict__[_CACHE_KEY] = cached
        return cached

    @property
    def distributed_state(self) -> Any:
        """accelerate's ``PartialState`` for this process."""
        return self._runtime().state

    @property
    def device(self) -> torch.device:
        """The device this process computes on."""
        return self._runtime().device

    @property
    def n_gpu(self) -> int:
        """GPUs this process drives: above 1 only for one process over several GPUs, 0 on CPU."""
        return self._runtime().n_gpu

    @property
    def parallel_mode(self) -> ParallelMode:
        """Whether the run is single-device, one process over several GPUs, or several processes."""
        return self._runtime().parallel_mode

    @property
    def runs_on_cpu(self) -> bool:
        """Whether accelerate was set up on CPU: ``use_cpu``, or processes a launcher started on a CPU-only machine.

        The ``Accelerator`` must be built with this, not with ``use_cpu``: a different choice would
        make accelerate reset the process state the arguments already set up.
        """
        return self._runtime().cpu

    @property
    def world_size(self) -> int:
        """Number of processes in the run."""
        return int(self._runtime().state.num_processes)

    @property
    def process_index(self) -> int:
        """Global rank of this process."""
        return int(self._runtime().state.process_index)

    @property
    def local_process_index(self) -> int:
        """Rank of this process on its node."""
        return int(self._runtime().state.local_process_index)

    @property
    def train_batch_size(self) -> int:
        """Samples per forward pass of this process (HF counts every GPU a single process drives)."""
        return self.per_device_train_batch_size * max(1, self.n_gpu)

    @property
    def eval_batch_size(self) -> int:
        """Evaluation samples per forward pass of this process."""
        return self.per_device_eval_batch_size * max(1, self.n_gpu)

    @property
    def should_log(self) -> bool:
        """Whether this process logs: the main process of each node, or of the whole run."""
        return (self.local_process_index if self.log_on_each_node else self.process_index) == 0

    @property
    def should_save(self) -> bool:
        """Whether this process writes checkpoints: the main process of each node, or of the run."""
        return (self.local_process_index if self.save_on_each_node else self.process_index) == 0

    @property
    def mixed_precision(self) -> str:
        """'fp16', 'bf16', or what ACCELERATE_MIXED_PRECISION says (default 'no')."""
        if self.fp16:
            return "fp16"
        if self.bf16:
            return "bf16"
        return os.environ.get("ACCELERATE_MIXED_PRECISION", "no")

    @property
    def ddp_timeout_delta(self) -> timedelta:
        """``ddp_timeout`` as the timedelta torch.distributed expects."""
        return timedelta(seconds=self.ddp_timeout)

    @property
    def place_model_on_device(self) -> bool | None:
        """HF hook for integrations; None lets the Trainer decide."""
        return None

    def get_process_log_level(self) -> int:
        """The ``logging`` level for this process; 'passive' keeps statetrain's current level."""
        chosen = LOG_LEVELS[self.log_level] if self.should_log else LOG_LEVELS[self.log_level_replica]
        return logging.getLogger("statetrain").getEffectiveLevel() if chosen == -1 else chosen

    @contextlib.contextmanager
    def main_process_first(self, local: bool = True, desc: str = "work") -> Iterator[None]:
        """Run the block on the main process (of the node when ``local``) before the others.

        Typical use: preprocess a dataset once and let the other processes read the cache.
        ``desc`` is accepted for transformers compatibility.
        """
        del desc
        if self.world_size <= 1:
            yield
            return
        state = self.distributed_state
        with state.local_main_process_first() if local else state.main_process_first():
            yield

    def __getstate__(self) -> dict[str, Any]:
        """Pickle and deepcopy without the process state, which belongs to this process only."""
        state = dict(self.__dict__)
        state.pop(_CACHE_KEY, None)
        return state
