"""``statetrain demo``: train the digits classifier, preempt it with SIGTERM, resume, compare bits."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "demo", help="train a digits classifier on CPU, preempt and resume it, and check the bits match"
    )
    parser.add_argument("--output-dir", default="statetrain_demo_output")
    parser.add_argument("--epochs", type=float, default=8)
    parser.add_argument("--progress", action="store_true", help="show tqdm progress bars for the three runs")
    parser.add_argument("--no-progress", action="store_true", help="(the default) no progress bars")
    parser.set_defaults(handler=run)


def run(options: argparse.Namespace) -> int:
    from statetrain.demo.run import run_demo

    print("training the digits MLP three times: uninterrupted, preempted by SIGTERM, resumed ...")
    result = run_demo(options.output_dir, epochs=options.epochs, disable_tqdm=not options.progress)
    print(f"loss: first logged {result.first_loss:.4f} -> last logged {result.last_loss:.4f}")
    print(f"held-out accuracy: {result.accuracy:.3f}")
    print(
        f"SIGTERM at step {result.preempted_at}: checkpoint written to {result.checkpoint}; "
        f"resumed in a new Trainer to step {result.global_step}"
    )
    verdict = "equal" if result.bit_identical else "DIFFER FROM"
    print(
        f"final weights {verdict} an uninterrupted run's bit for bit ({result.tensors_compared} tensors, torch.equal)"
    )
    print("look at:")
    for what, path in result.files.items():
        print(f"  {what:8} {path}")
    print(f"  (`statetrain plot {result.output_dir}` and `statetrain summary {result.output_dir}` redo them)")
    return 0 if result.bit_identical else 1
