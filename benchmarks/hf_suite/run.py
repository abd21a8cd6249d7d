"""transformers' own Trainer tests as the measure of statetrain's drop-in claim (issue 13, item 7).

Usage::

    python benchmarks/hf_suite/run.py --tests /path/to/transformers/tests/trainer \\
        [--files test_trainer_callback.py test_trainer_checkpointing.py ...] [-k EXPR] [--json out.json]

It fetches nothing: point ``--tests`` at the ``tests/trainer`` folder of a transformers checkout
whose version matches the installed transformers (5.24; its ``tests/fixtures`` must be beside it).
The chosen files run twice on CPU, in child processes: once as they are (against transformers) and
once with statetrain's classes put in transformers' place (``hf_suite_shim.py``). It prints how many
tests pass on each and, for every test that passes on transformers but not on statetrain, the first
line of its failure. docs/status.md records the latest counts and the reason for each difference.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DEFAULT_FILES = (
    "test_trainer.py",
    "test_trainer_callback.py",
    "test_trainer_checkpointing.py",
    "test_trainer_data.py",
    "test_trainer_evaluation.py",
    "test_training_args.py",
    "test_trainer_optimizers.py",
)


def run_suite(tests: Path, files: list[str], target: str, keyword: str | None, timeout: int) -> dict[str, str]:
    """``{test id: "passed" | "failed: <first line>" | "skipped"}`` for one target."""
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "report.xml"
        env = {
            **os.environ,
            "STATETRAIN_HF_SUITE": target,
            "CUDA_VISIBLE_DEVICES": "",
            "PYTHONPATH": os.pathsep.join([str(HERE), str(REPO), str(tests.parent.parent)]),
        }
        command = [sys.executable, "-m", "pytest", "-p", "hf_suite_shim", "-p", "no:cacheprovider", "-q"]
        command += [f"--junitxml={report}", "--rootdir", str(tests.parent.parent)]
        command += ["-k", keyword] if keyword else []
        command += [str(tests / f) for f in files if (tests / f).is_file()]
        subprocess.run(
            command,
            env=env,
            cwd=scratch,
            timeout=timeout,
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return parse_junit(report) if report.is_file() else {}


def parse_junit(report: Path) -> dict[str, str]:
    outcomes: dict[str, str] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        test_id = f"{case.get('classname')}::{case.get('name')}"
        problem = next((c for c in case if c.tag in ("failure", "error")), None)
        if problem is not None:
            first = (problem.get("message") or problem.text or "").strip().splitlines()
            outcomes[test_id] = "failed: " + (first[0][:200] if first else problem.tag)
        elif any(c.tag == "skipped" for c in case):
            outcomes[test_id] = "skipped"
        else:
            outcomes[test_id] = "passed"
    return outcomes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tests", type=Path, required=True, help="transformers' tests/trainer folder")
    parser.add_argument("--files", nargs="*", default=list(DEFAULT_FILES))
    parser.add_argument("-k", dest="keyword", help="pytest -k expression")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per target")
    parser.add_argument("--json", type=Path, help="write every test's outcome on both targets here")
    options = parser.parse_args(argv)
    results = {
        target: run_suite(options.tests, options.files, target, options.keyword, options.timeout)
        for target in ("transformers", "statetrain")
    }
    reference, ours = results["transformers"], results["statetrain"]
    passing = sorted(t for t, outcome in reference.items() if outcome == "passed")
    kept = [t for t in passing if ours.get(t) == "passed"]
    print(f"tests run: {len(reference)}; pass on transformers: {len(passing)}; of those on statetrain: {len(kept)}")
    for test_id in passing:
        if ours.get(test_id) != "passed":
            print(f"  {test_id}: {ours.get(test_id, 'not run')}")
    if options.json:
        options.json.write_text(json.dumps(results, indent=2, sort_keys=True), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
