"""``statetrain import-hf-checkpoint`` / ``export-hf-checkpoint``: convert checkpoints to and from transformers'
format (the work is in ``statetrain.checkpoint.hf_format``)."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(sub: Any) -> None:
    """Register both subcommands on an ``argparse`` subparsers object."""
    importer = sub.add_parser(
        "import-hf-checkpoint",
        help="turn a transformers.Trainer checkpoint folder into a statetrain checkpoint that train() resumes",
    )
    importer.add_argument("src", help="the HF checkpoint folder (output_dir/checkpoint-N)")
    importer.add_argument("dst", help="the statetrain checkpoint folder to create (must not exist)")
    exporter = sub.add_parser(
        "export-hf-checkpoint",
        help="write a statetrain checkpoint as a transformers.Trainer checkpoint (HF's pickle files)",
    )
    exporter.add_argument("src", help="the statetrain checkpoint folder (output_dir/checkpoint-N)")
    exporter.add_argument("dst", help="the HF checkpoint folder to create (must not exist)")
    importer.set_defaults(handler=run_checkpoint_command)
    exporter.set_defaults(handler=run_checkpoint_command)


def run_checkpoint_command(options: argparse.Namespace) -> int:
    """Exit status 0 and the new folder on stdout; 1 and the reason on stderr."""
    from statetrain.checkpoint.hf_format import HFCheckpointError, export_hf_checkpoint, import_hf_checkpoint
    from statetrain.checkpoint.store import CheckpointError
    from statetrain.context.state import ContextFileError

    convert = import_hf_checkpoint if options.command == "import-hf-checkpoint" else export_hf_checkpoint
    try:
        path = convert(options.src, options.dst)
    except (HFCheckpointError, CheckpointError, ContextFileError, OSError) as exc:
        print(f"statetrain {options.command}: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0
