"""Checkpoints written by several processes: one writer, every rank's RNG, one agreed outcome.

Checkpoints: one writer (the main process, or each node's main process with ``save_on_each_node``)
writes the model, optimizer, scheduler and state once, and the RNG state of *every* rank, gathered
before the write, so the folder is committed atomically and verified by one manifest as in a
single-process run. Then every rank learns whether every writer succeeded before it goes on, so no
rank resumes, rotates, or reports a checkpoint that is not complete.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from statetrain.checkpoint.output_lock import OutputDirLock
from statetrain.checkpoint.rng import capture_rng_state, rng_state_name, save_rng_state
from statetrain.checkpoint.store import CheckpointWriteError, rotate_checkpoints, write_checkpoint
from statetrain.checkpoint.tensor_tree import save_tree
from statetrain.distributed.processes import all_gather_object, world_size_of


@contextmanager
def hold_output_dir(args: Any) -> Iterator[None]:
    """Hold the run's lock on ``output_dir`` for the block (collective with several processes).

    The processes that write checkpoints take the lock under one run token (chosen by process 0),
    so node mains of one run on a shared file system share it. If any process cannot take it (the
    folder is in use, a file, or not writable), every process raises before training starts: the
    failing one its own error, the others an error naming that process, so none waits forever.
    """
    world_size = world_size_of(args)
    token = secrets.token_hex(8)
    if world_size > 1:
        token = all_gather_object(token, world_size)[0]
    lock = OutputDirLock(Path(args.output_dir), token)
    failure: Exception | None = None
    if args.should_save:
        try:
            lock.acquire()
        except (OSError, ValueError, RuntimeError) as exc:
            failure = exc
    if world_size > 1:
        outcomes = all_gather_object(None if failure is None else f"{type(failure).__name__}: {failure}", world_size)
        if failure is None and any(outcomes):
            lock.release()
            rank, text = next((rank, text) for rank, text in enumerate(outcomes) if text)
            raise RuntimeError(f"process {rank} could not take output_dir {args.output_dir!r}: {text}")
    if failure is not None:
        raise failure
    try:
        yield
    finally:
        lock.release()


def gather_rng_states(args: Any) -> list[dict[str, Any]] | None:
    """Every rank's RNG state, indexed by rank (collective); None with one process.

    The states travel between the run's own processes in memory; on disk they are written through
    ``tensor_tree`` (JSON + safetensors) like every other checkpoint file.
    """
    world_size = world_size_of(args)
    if world_size <= 1:
        return None
    return all_gather_object(capture_rng_state(), world_size)


def write_rng_files(folder: Path, args: Any, states: list[dict[str, Any]] | None) -> None:
    """``rng_state`` for one process; ``rng_state_<rank>`` for every rank of a multi-process run."""
    if states is None:
        save_rng_state(folder, rank=args.process_index if world_size_of(args) > 1 else None)
        return
    for rank, state in enumerate(states):
        save_tree(state, folder, rng_state_name(rank))


def commit_checkpoint(
    args: Any,
    output_dir: Path,
    name: str,
    write_files: Callable[[Path], None],
    metadata: dict[str, Any],
    protected: list[Path],
    required: Callable[[dict[str, Any]], Any] | None = None,
) -> Path:
    """Write and rotate on the writing process(es); with several processes, agree on the outcome.

    Returns the checkpoint path on every rank once every writer has committed it (the agreement is
    the barrier). If any writer failed, every rank raises ``CheckpointWriteError`` naming it, so no
    rank continues (or resumes later) believing in a checkpoint that is not there.
    """
    world_size = world_size_of(args)
    if world_size <= 1:
        path = write_checkpoint(output_dir, name, write_files, metadata, required)
        rotate_checkpoints(output_dir, args.save_total_limit, protected)
        return path
    outcome: str | None = None
    failure: BaseException | None = None
    if args.should_save:
        try:
            write_checkpoint(output_dir, name, write_files, metadata, required)
            rotate_checkpoints(output_dir, args.save_total_limit, protected)
            outcome = "ok"
        except Exception as exc:  # every rank must hear of it, or the others would wait forever
            failure = exc
            outcome = f"{type(exc).__name__}: {exc}"
    outcomes = all_gather_object(outcome, world_size)
    if failure is not None:
        raise failure
    failed = [(rank, text) for rank, text in enumerate(outcomes) if text not in (None, "ok")]
    if failed:
        rank, text = failed[0]
        error = CheckpointWriteError(f"process {rank} could not write checkpoint {output_dir / name}: {text}")
        error.target = output_dir / name
        raise error
    if "ok" not in outcomes:
        raise CheckpointWriteError(
            f"no process wrote checkpoint {output_dir / name}: none has should_save (check save_on_each_node "
            "and the process ranks)"
        )
    return output_dir / name


def world_size_mismatch(path: Path, recorded: int, current: int) -> str:
    """Why a checkpoint of ``recorded`` processes cannot continue in ``current``; the fix in one line.

    Each rank's data shard and RNG stream depend on the number of processes, so a different count
    would replay or skip samples and start different random streams: the run would not continue.
    """
    return (
        f"cannot resume from {path}: it was written by a run of {recorded} process(es) and this run has "
        f"{current}. The data each process reads and its random state depend on the number of processes; "
        f"start this run with {recorded} (for example torchrun --nproc_per_node {recorded}) to resume it"
    )
