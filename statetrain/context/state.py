"""The machine context: ``TrainerState`` (HF's, field for field), ``TrainerControl`` and the engine's own.

``trainer_state.json`` keeps HF's layout (indent 2, sorted keys, HF field names only), so that
``transformers.TrainerState.load_from_json`` reads it. What only the engine needs (the current
machine state, the data position, the running loss sums) lives in ``EngineState`` in its own file
beside it. All three round-trip to JSON exactly, NaN and infinity
included (written as the ``NaN``/``Infinity`` literals Python's json module reads back).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass as pydantic_dataclass

TRAINER_STATE_NAME = "trainer_state.json"
ENGINE_STATE_NAME = "engine_state.json"


class ContextFileError(ValueError):
    """A context file could not be read; the message names the file and the field."""


JSON_FILE_CAP = 256 << 20
"""The largest context file read (bytes): a ``log_history`` of about two million entries."""
_MAX_INT_DIGITS = 20  # every integer of these files fits 64 bits


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > _MAX_INT_DIGITS:
        raise ValueError(f"integer of {len(text)} digits (at most {_MAX_INT_DIGITS} allowed)")
    return int(text)


class _JsonFile:
    """Exact JSON round-trip with Python's json (NaN/Infinity literals, sorted keys), for the context dataclasses.

    They are pydantic dataclasses rather than models: fields are plain attributes (the loop writes
    some every step, and a model's ``__setattr__`` costs a call each), and ``dataclasses.asdict``
    works as on HF's; pydantic validates a context when it is built or read from JSON.
    """

    def to_json_string(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"  # type: ignore[call-overload]

    @classmethod
    def from_json_string(cls, text: str, source: str = "<string>") -> Any:
        data = _json_object(text, source)
        try:
            return _adapter(cls).validate_python(data)
        except ValidationError as exc:
            raise _field_error(cls.__name__, source, exc) from exc

    def save_to_json(self, json_path: str | Path) -> None:
        Path(json_path).write_text(self.to_json_string(), encoding="utf-8")

    @classmethod
    def load_from_json(cls, json_path: str | Path) -> Any:
        return cls.from_json_string(_read_utf8(Path(json_path)), source=str(json_path))


_ADAPTERS: dict[type, TypeAdapter[Any]] = {}


def _adapter(cls: type) -> TypeAdapter[Any]:
    if cls not in _ADAPTERS:
        _ADAPTERS[cls] = TypeAdapter(cls)
    return _ADAPTERS[cls]


def _read_utf8(path: Path) -> str:
    with open(path, "rb") as handle:
        data = handle.read(JSON_FILE_CAP + 1)
    if len(data) > JSON_FILE_CAP:
        raise ContextFileError(f"{path} is larger than the {JSON_FILE_CAP} bytes a context file may hold")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ContextFileError(f"{path} is not a UTF-8 JSON file: {exc}") from exc


def _json_object(text: str, source: str) -> dict[str, Any]:
    try:
        data = json.loads(text, parse_int=_bounded_int)
    except RecursionError:
        raise ContextFileError(f"{source} is not valid JSON: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, or an integer longer than the format allows
        raise ContextFileError(f"{source} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ContextFileError(f"{source} must hold a JSON object, not {type(data).__name__}")
    return data


def _field_error(name: str, source: str, exc: ValidationError) -> ContextFileError:
    fields = ", ".join(".".join(str(p) for p in err["loc"]) for err in exc.errors())
    return ContextFileError(f"{source}: invalid {name} field(s) {fields}: {exc}")


@pydantic_dataclass(config=ConfigDict(extra="forbid", arbitrary_types_allowed=True))
class TrainerState(_JsonFile):
    """HF's ``TrainerState``: one step is one optimizer update. Field names and defaults are HF's.

    A dataclass, as HF's is, so ``dataclasses.asdict(state)`` and ``dataclasses.replace`` work;
    pydantic validates the fields when one is built or read from JSON.
    """

    epoch: float = 0
    global_step: int = 0
    max_steps: int = 0
    logging_steps: int = 500
    eval_steps: int = 500
    save_steps: int = 500
    train_batch_size: int | None = None
    num_train_epochs: int = 0
    num_input_tokens_seen: int = 0
    total_flos: float = 0
    log_history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    best_metric: float | None = None
    best_global_step: int | None = None
    best_model_checkpoint: str | None = None
    is_local_process_zero: bool = True
    is_world_process_zero: bool = True
    is_hyper_param_search: bool = False
    trial_name: str | None = None
    trial_params: dict[str, Any] | None = None
    stateful_callbacks: dict[str, Any] = dataclasses.field(default_factory=dict)

    def compute_steps(self, args: Any, max_steps: int) -> None:
        """Resolve fractional logging/eval/save cadences against ``max_steps`` (HF ``compute_steps``)."""
        for kind in ("logging", "eval", "save"):
            value = getattr(args, f"{kind}_steps")
            if value is not None:
                if value < 1:
                    value = math.ceil(max_steps * value)
                setattr(self, f"{kind}_steps", int(value))


@pydantic_dataclass(config=ConfigDict(extra="forbid"))
class TrainerControl(_JsonFile):
    """The five HF flags. Callbacks set them; the machine's guards read them.

    A dataclass, as HF's is (``dataclasses.asdict(control)``, ``dataclasses.fields``).
    """

    should_training_stop: bool = False
    should_epoch_stop: bool = False
    should_save: bool = False
    should_evaluate: bool = False
    should_log: bool = False

    def _new_training(self) -> None:
        self.should_training_stop = False

    def _new_epoch(self) -> None:
        self.should_epoch_stop = False

    def _new_step(self) -> None:
        self.should_save = False
        self.should_evaluate = False
        self.should_log = False

    def state(self) -> dict[str, Any]:
        """HF ``ExportableState`` form."""
        return {"args": dataclasses.asdict(self), "attributes": {}}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> TrainerControl:
        control = cls(**state["args"])
        for key, value in state.get("attributes", {}).items():
            setattr(control, key, value)
        return control


@pydantic_dataclass(config=ConfigDict(extra="forbid"))
class EngineState(_JsonFile):
    """The engine's own persisted context: where the machine is and what it has summed so far."""

    format_version: int = 1
    current_state: str = "init"
    epoch_index: int = 0
    """0-based index of the epoch in progress."""
    epoch_ended: bool = False
    """Whether the epoch ``epoch_index`` has finished (its epoch-end work has run)."""
    batches_in_epoch: int = 0
    """Micro-batches of the current epoch already consumed (the data position)."""
    tr_loss: float = 0.0
    """Sum of the step losses since the last log."""
    total_loss_scalar: float = 0.0
    """Sum of every logged step loss, for ``train_loss``."""
    globalstep_last_logged: int = 0
    custom: dict[str, Any] = dataclasses.field(default_factory=dict)
    """JSON state of custom states, one entry per state name (a curriculum's stage, a task cursor)."""
