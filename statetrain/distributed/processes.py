"""What several processes must agree on: preemption, the checkpoint to resume from, per-process logging.

Every function here is a no-op (or the plain single-process path) when the run has one process,
and a collective call otherwise: each rank must call it at the same point of the loop, which the
states guarantee because every rank takes the same transitions (same number of batches per rank,
same flags). Collectives go through ``torch.distributed`` on the group accelerate set up.

Preemption: a signal reaches one rank (a scheduler may signal only some). At every optimizer step
boundary, and at every epoch end, the ranks take the maximum of their pending signal numbers, so
all ranks see the request at the same step and write the same checkpoint; none waits forever in a
collective the others never enter.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from statetrain.events.hf_loggers import transformers_logging

if TYPE_CHECKING:
    from statetrain.context.run import Run

logger = logging.getLogger(__name__)


def world_size_of(args: Any) -> int:
    """Number of processes in the run (1 when the arguments know of none)."""
    return int(getattr(args, "world_size", 1))


_CPU_GROUPS: dict[int, Any] = {}


def _cpu_group() -> Any:
    """A gloo group over every process, for the small host-side exchanges here (None: the default group).

    With NCCL, reading a result on the host would wait for all the GPU work queued before it, every
    step; over gloo the exchange stays on the CPU. When the default group already runs CPU tensors
    over gloo (``gloo``, or ``cpu:gloo,...`` as accelerate sets it up) no side group is made. A side
    group is created once per process group, on first use (a collective call: every process
    reaches it at the same point), and destroyed at interpreter exit by the teardown's hook.
    """
    world = torch.distributed.group.WORLD
    if _cpu_runs_on_gloo():
        return None
    key = id(world)
    if key not in _CPU_GROUPS:
        _CPU_GROUPS[key] = torch.distributed.new_group(backend="gloo")
    return _CPU_GROUPS[key]


def _cpu_runs_on_gloo() -> bool:
    config = str(torch.distributed.get_backend_config())
    return config == "gloo" or any(part.strip() == "cpu:gloo" for part in config.split(","))


def destroy_cpu_groups() -> None:
    """Destroy the side groups while the interpreter is whole (at exit; see :mod:`statetrain.distributed.teardown`)."""
    groups = list(_CPU_GROUPS.values())
    _CPU_GROUPS.clear()
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    for group in groups:
        try:
            torch.distributed.destroy_process_group(group)
        except (RuntimeError, ValueError) as exc:  # already destroyed with the default group
            logger.debug("side process group already gone: %s", exc)


def all_gather_object(value: Any, world_size: int) -> list[Any]:
    gathered: list[Any] = [None] * world_size
    torch.distributed.all_gather_object(gathered, value, group=_cpu_group())
    return gathered


# --- logging -------------------------------------------------------------------------------------


def configure_process_logging(args: Any) -> None:
    """HF's per-process log level: ``log_level`` on the main process, ``log_level_replica`` elsewhere.

    Only applied with several processes (or an explicit ``log_level``), so a one-process run keeps
    whatever level the application set on the ``statetrain`` logger. A level that is not
    "passive" also becomes transformers' verbosity when transformers is in use, as HF's Trainer
    sets it: it governs the messages HF's users know from it (see ``hf_facing_logger``).
    """
    if world_size_of(args) <= 1 and getattr(args, "log_level", "passive") == "passive":
        return
    level = args.get_process_log_level()
    logging.getLogger("statetrain").setLevel(level)
    chosen = args.log_level if args.should_log else args.log_level_replica
    hf_logging = transformers_logging()
    if hf_logging is not None and chosen != "passive":
        hf_logging.set_verbosity(level)


def agree_everywhere(args: Any, flag: bool) -> bool:
    """Whether ``flag`` holds on every process (collective with several; the flag itself with one)."""
    world_size = world_size_of(args)
    if world_size <= 1:
        return flag
    return all(all_gather_object(bool(flag), world_size))


# --- preemption ----------------------------------------------------------------------------------


def agree_on_preemption(run: Run) -> None:
    """All ranks adopt a signal any rank received (collective; call at a step or epoch boundary)."""
    request = run.preemption
    if not request.coordinated:
        return
    local = request.signum if request.signum is not None else 0
    flag = torch.tensor([local], dtype=torch.int64)  # on the CPU: no wait for the GPU's queued work
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX, group=_cpu_group())
    agreed = int(flag.item())
    if agreed and request.agreed is None:
        if request.signum is None:
            logger.warning(
                "another process received signal %d; stopping at step %d with the others", agreed, run.state.global_step
            )
        request.agreed = agreed


# --- resume --------------------------------------------------------------------------------------


def agree_on_checkpoint(args: Any, resolve: Callable[[], Path], locate: Callable[[str], Path]) -> Path:
    """Resolve the checkpoint to resume from once per copy of the files, and check every process agrees.

    ``resolve`` finds and verifies a checkpoint (every byte hashed); ``locate`` finds one by folder
    name without hashing it. Only the processes that write checkpoints verify them: the main process,
    or each node's main process with ``save_on_each_node`` (one per copy of the files), so a resume
    reads a large checkpoint once per node instead of once per process. The others take the name
    the verifiers chose and check that their own view of it exists. With node-local storage (or a
    checkpoint that fails to verify on one node only), processes could otherwise resume from
    different steps and train on silently; a process that cannot resolve one makes every process
    fail with its reason instead of leaving the others waiting.
    """
    world_size = world_size_of(args)
    if world_size <= 1:
        return resolve()
    verifies = bool(args.should_save)
    chosen, failure, outcome = _attempt(resolve) if verifies else (None, None, "skip")
    outcomes = all_gather_object(outcome, world_size)
    _raise_on_errors(outcomes, failure)
    verified = sorted({text[3:] for text in outcomes if text.startswith("ok:")})
    if not verifies:
        chosen, failure, outcome = _attempt(lambda: locate(verified[0]))
    outcomes = all_gather_object(outcome, world_size)
    _raise_on_errors(outcomes, failure)
    names = sorted({text[3:] for text in outcomes})
    if len(names) > 1:
        by_rank = ", ".join(f"process {rank}: {text[3:]}" for rank, text in enumerate(outcomes))
        raise RuntimeError(
            f"the processes would resume from different checkpoints ({by_rank}); every process must see the "
            "same checkpoints (a shared output_dir, or save_on_each_node with the same folders on each node)"
        )
    assert chosen is not None
    return chosen


def _attempt(find: Callable[[], Path]) -> tuple[Path | None, BaseException | None, str]:
    try:
        chosen = find()
    except Exception as exc:
        return None, exc, f"error:{type(exc).__name__}: {exc}"
    return chosen, None, f"ok:{chosen.name}"


def _raise_on_errors(outcomes: list[str], own_failure: BaseException | None) -> None:
    """Every process raises: its own error as is, or the first other process's, named."""
    if own_failure is not None:
        raise own_failure
    errors = [(rank, text[6:]) for rank, text in enumerate(outcomes) if text.startswith("error:")]
    if errors:
        raise RuntimeError(f"process {errors[0][0]} could not find the checkpoint to resume from: {errors[0][1]}")
