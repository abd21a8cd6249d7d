"""Each kind of data source and the machine/collator sections build what the config names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import datasets
import pytest

from statetrain.cli.config import ConfigError, load_config
from statetrain.cli.config.build import build_collator, build_dataset, build_machine
from statetrain.engine.default_machine import default_machine

ROWS = {"a": [1, 2, 3, 4], "b": ["w", "x", "y", "z"]}


def config_with(tmp_path: Path, data: str, extra: str = "") -> Path:
    path = tmp_path / "conf" / "run.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(f"model: {{factory: tests.helpers:TinyRegressor}}\ndata:\n{data}\n{extra}args: {{}}\n")
    return path


@pytest.mark.parametrize(
    ("name", "write"),
    [
        ("rows.csv", lambda d, p: d.to_csv(p, index=False)),
        ("rows.jsonl", lambda d, p: d.to_json(p, lines=True)),
        ("rows.parquet", lambda d, p: d.to_parquet(p)),
        ("saved", lambda d, p: d.save_to_disk(p)),
        ("saved_dict", lambda d, p: datasets.DatasetDict({"train": d}).save_to_disk(p)),
    ],
)
def test_files_and_saved_datasets_are_read_through_datasets(tmp_path: Path, name: str, write: Any) -> None:
    (tmp_path / "conf").mkdir()
    write(datasets.Dataset.from_dict(ROWS), str(tmp_path / "conf" / name))
    config, source = load_config(config_with(tmp_path, f"  train: {{path: {name}, limit: 3}}"))
    data = build_dataset(config.data, "train", None, source)
    assert data["a"] == [1, 2, 3] and data["b"] == ["w", "x", "y"]
    assert build_dataset(config.data, "eval", None, source) is None


def test_a_missing_file_or_split_names_the_key_and_line(tmp_path: Path) -> None:
    config, source = load_config(config_with(tmp_path, "  train:\n    path: nowhere.csv"))
    with pytest.raises(ConfigError, match=r"run.yaml:4: data.train.path: cannot read .*nowhere.csv as csv"):
        build_dataset(config.data, "train", None, source)
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(ROWS)}).save_to_disk(str(tmp_path / "conf" / "dd"))
    config, source = load_config(config_with(tmp_path, "  train: {path: dd, split: validation}"))
    with pytest.raises(ConfigError, match=r"data.train.split: .* has splits \['train'\], not 'validation'"):
        build_dataset(config.data, "train", None, source)
    config, source = load_config(config_with(tmp_path, "  train: {path: rows.xyz}"))
    with pytest.raises(ConfigError, match="cannot tell the format"):
        build_dataset(config.data, "train", None, source)


def test_machine_and_collator_sections(tmp_path: Path) -> None:
    extra = "machine: statetrain.engine.default_machine:default_machine\ncollator: tests.helpers:regression_rows\n"
    config, source = load_config(config_with(tmp_path, "  train: {path: x.csv}", extra))
    machine = build_machine(config.machine, source)
    assert machine is not None and machine.to_mermaid() == default_machine().to_mermaid()
    config, source = load_config(
        config_with(tmp_path, "  train: {path: x.csv}", "machine: statetrain.context.preemption:PREEMPTION_EXIT_CODE\n")
    )
    with pytest.raises(ConfigError, match=r"run.yaml:4: machine: .*not a MachineSpec"):
        build_machine(config.machine, source)
    config, source = load_config(config_with(tmp_path, "  train: {path: x.csv}", "machine: statetrain.demo:accuracy\n"))
    with pytest.raises(ConfigError, match=r"run.yaml:4: machine: calling statetrain.demo:accuracy failed"):
        build_machine(config.machine, source)
    config, source = load_config(config_with(tmp_path, "  train: {path: x.csv}", "collator: padding\n"))
    with pytest.raises(ConfigError, match=r"collator.name: the padding collator needs a tokenizer section"):
        build_collator(config.collator, None, source)
