"""The built-in example: the digits classifier (:mod:`.digits`) and what ``statetrain demo`` shows (:mod:`.run`).

May import ``reports`` and every layer below it; only ``cli`` imports it.
"""

from statetrain.demo.digits import (
    DigitsClassifier,
    accuracy,
    digits_accuracy,
    digits_split,
    load_digits_splits,
)
from statetrain.demo.run import DemoResult, run_demo

__all__ = [
    "DemoResult",
    "DigitsClassifier",
    "accuracy",
    "digits_accuracy",
    "digits_split",
    "load_digits_splits",
    "run_demo",
]
