"""pytest plugin: with ``STATETRAIN_HF_SUITE=statetrain``, transformers' Trainer names are statetrain's.

Loaded by ``benchmarks/hf_suite/run.py`` before the test modules are collected, so that a test file's
``from transformers import Trainer, TrainingArguments, ...`` (and the same names imported from
``transformers.trainer``, ``transformers.training_args``, ``transformers.trainer_callback``) binds
statetrain's classes. Every name statetrain exports that transformers also exports is substituted;
everything else (models, tokenizers, collators, testing utilities) stays transformers'.
"""

from __future__ import annotations

import os
from typing import Any

SUBMODULES = ("trainer", "training_args", "trainer_callback", "trainer_seq2seq", "training_args_seq2seq")


def substituted_names() -> dict[str, Any]:
    import transformers

    import statetrain

    exported = getattr(statetrain, "__all__", [n for n in dir(statetrain) if not n.startswith("_")])
    return {name: getattr(statetrain, name) for name in exported if hasattr(transformers, name)}


def pytest_configure(config: Any) -> None:
    if os.environ.get("STATETRAIN_HF_SUITE") != "statetrain":
        return
    import importlib
    import sys

    import transformers

    names = substituted_names()
    # importing statetrain (and its dependencies) can leave a second lazy ``transformers`` module in
    # sys.modules; the test modules' imports read that one, so both get the names
    for module in {id(m): m for m in (transformers, sys.modules["transformers"])}.values():
        for name, value in names.items():
            setattr(module, name, value)
    for sub in SUBMODULES:
        try:
            module = importlib.import_module(f"transformers.{sub}")
        except ImportError:
            continue
        for name, value in names.items():
            if hasattr(module, name):
                setattr(module, name, value)
    config.stash_names = sorted(names)  # type: ignore[attr-defined]


def pytest_report_header(config: Any) -> str:
    target = os.environ.get("STATETRAIN_HF_SUITE", "transformers")
    names = getattr(config, "stash_names", [])
    return f"hf_suite target: {target}" + (f" (substituted: {', '.join(names)})" if names else "")
