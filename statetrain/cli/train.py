"""``statetrain train CONFIG.yaml``: train from a config file, no script needed.

``--set args.learning_rate=3e-4`` overrides any key; ``--resume`` continues from the newest
checkpoint in ``output_dir`` (or the one named); ``--print-schema`` prints the file's JSON schema.
While training, ``output_dir/trainer_state.json`` is rewritten at every log, so ``statetrain plot``
and ``statetrain summary`` can follow the run as it goes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("train", help="train from a YAML config file (see docs/cli.md)")
    parser.add_argument("config", nargs="?", metavar="CONFIG.yaml", help="the run's config file")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a key, e.g. --set args.learning_rate=3e-4 (the value is read as YAML); repeatable",
    )
    parser.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=None,
        metavar="CHECKPOINT",
        help="resume from the newest verified checkpoint in output_dir, or from CHECKPOINT",
    )
    parser.add_argument("--print-schema", action="store_true", help="print the config file's JSON schema and exit")
    parser.set_defaults(handler=run)


class StateFileWriter:
    """Rewrites ``output_dir/trainer_state.json`` at every log (atomically) so readers see the run live."""

    def __init__(self, output_dir: str) -> None:
        self.path = Path(output_dir) / "trainer_state.json"

    def write(self, state: Any) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(state.to_json_string(), encoding="utf-8")
        os.replace(tmp, self.path)

    def on_log(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            self.write(state)


def run(options: argparse.Namespace) -> int:
    from statetrain.cli.config import ConfigError, config_json_schema, load_config

    if options.print_schema:
        json.dump(config_json_schema(), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    if options.config is None:
        raise SystemExit("statetrain train: give a CONFIG.yaml (or --print-schema)")
    from statetrain.checkpoint.store import CheckpointError
    from statetrain.cli.config.build import build_trainer
    from statetrain.context.preemption import PREEMPTION_EXIT_CODE, TrainingPreempted
    from statetrain.trainer.checkpoints import ResumeError

    try:
        config, source = load_config(options.config, options.overrides)
        trainer = build_trainer(config, source)
    except ConfigError as exc:
        print(f"statetrain train: invalid config\n{exc}", file=sys.stderr)
        return 2
    writer = StateFileWriter(trainer.args.output_dir)
    trainer.add_callback(writer)
    try:
        output = trainer.train(resume_from_checkpoint=options.resume)
    except TrainingPreempted as stop:
        print(f"preempted: {stop}", file=sys.stderr)
        return PREEMPTION_EXIT_CODE
    except (ResumeError, CheckpointError) as exc:  # --resume with nothing (valid) to resume from
        print(f"statetrain train: cannot resume: {exc}", file=sys.stderr)
        return 1
    if trainer.args.should_save:
        writer.write(trainer.state)
    print(f"trained {output.global_step} steps, mean training loss {output.training_loss:.4f}")
    print(f"run folder: {trainer.args.output_dir} (statetrain summary / statetrain plot read it)")
    return 0
