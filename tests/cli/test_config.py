"""The config file: validated by the schema, every error naming the key and its line, overrides applied."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from statetrain.cli import main as cli_main
from statetrain.cli.config import ConfigError, load_config
from statetrain.cli.config.build import build_args, build_model

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "configs"

GOOD = """\
seed: 3
model:
  factory: tests.helpers:TinyRegressor
  kwargs: {hidden: 8}
data:
  train: {factory: tests.helpers:regression_rows, kwargs: {n: 32}}
args:
  output_dir: out
  learning_rate: 3e-3
  max_steps: 4
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def error_of(path: Path, *overrides: str) -> str:
    with pytest.raises(ConfigError) as caught:
        config, source = load_config(path, overrides)
        build_args(config, source)
    return str(caught.value)


def test_a_good_config_validates_and_builds(tmp_path: Path) -> None:
    config, source = load_config(write(tmp_path, GOOD))
    args = build_args(config, source)
    assert args.learning_rate == 3e-3 and args.max_steps == 4  # 3e-3 is a number, not a string
    assert build_model(config.model, source).net[0].out_features == 8
    assert source.where(("args", "max_steps")) == f"{tmp_path / 'run.yaml'}:10"


def test_an_unknown_section_key_names_its_line_and_the_closest_key(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, GOOD.replace("  kwargs: {hidden", "  kwarg: {hidden")))
    assert message == f"{tmp_path / 'run.yaml'}:4: model.kwarg: unknown key; did you mean 'kwargs'?"
    message = error_of(write(tmp_path, GOOD.replace("seed: 3", "sede: 3")))
    assert message.startswith(f"{tmp_path / 'run.yaml'}:1: sede: unknown key; did you mean 'seed'?")


def test_a_misspelt_training_argument_names_its_line(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, GOOD.replace("learning_rate", "lerning_rate")))
    assert message.startswith(f"{tmp_path / 'run.yaml'}:9: args.lerning_rate: ")
    assert "did you mean 'learning_rate'?" in message


def test_a_bad_value_names_the_key_and_line(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, GOOD.replace("max_steps: 4", "max_steps: many")))
    assert message.startswith(f"{tmp_path / 'run.yaml'}:10: args.max_steps: ")
    message = error_of(write(tmp_path, GOOD.replace("  factory: tests.helpers:TinyRegressor\n", "")))
    assert re.match(
        rf"{re.escape(str(tmp_path / 'run.yaml'))}:2: model: .*exactly one of factory or auto_class", message
    )


def test_cross_field_errors_point_at_the_argument_named_first(tmp_path: Path) -> None:
    text = GOOD + "  eval_strategy: steps\n  eval_steps: -3\n"
    message = error_of(write(tmp_path, text))
    assert message.startswith(
        f"{tmp_path / 'run.yaml'}:11: args.eval_strategy: eval_strategy='steps' needs eval_steps > 0"
    )


def test_set_overrides_values_and_errors_name_the_override(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    config, source = load_config(path, ["args.learning_rate=3e-4", "model.kwargs.hidden=5", "args.fp16=false"])
    args = build_args(config, source)
    assert args.learning_rate == 3e-4 and args.fp16 is False
    assert build_model(config.model, source).net[0].out_features == 5
    message = error_of(path, "args.warmup_ratio=lots")
    assert message.startswith(f"{path} (--set args.warmup_ratio=lots): args.warmup_ratio: ")
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(path, ["args.learning_rate"])


def test_yaml_syntax_and_import_errors_are_located(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"run.yaml:3: not valid YAML: expected <block end>"):
        load_config(write(tmp_path, "model:\n  factory: x\n bad: [\n"))
    config, source = load_config(write(tmp_path, GOOD.replace("TinyRegressor", "NoSuchModel")))
    with pytest.raises(ConfigError, match=r"run.yaml:3: model.factory: cannot load .*NoSuchModel"):
        build_model(config.model, source)


def test_train_command_reports_an_invalid_config_with_exit_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, GOOD.replace("max_steps", "max_step"))
    assert cli_main(["train", str(path)]) == 2
    assert f"{path}:10: args.max_step: " in capsys.readouterr().err


def test_print_schema_describes_every_section_and_training_argument(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["train", "--print-schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert {"model", "data", "tokenizer", "collator", "metrics", "callbacks", "machine", "args"} <= set(
        schema["properties"]
    )
    args = schema["$defs"]["TrainingArguments"]
    assert {"learning_rate", "eval_strategy", "save_steps", "seed"} <= set(args["properties"])
    assert args["additionalProperties"] is False or "additionalProperties" not in args


@pytest.mark.parametrize("name", ["digits-mlp.yaml", "tiny-gpt2.yaml"])
def test_example_configs_validate(name: str) -> None:
    config, source = load_config(EXAMPLES / name)
    build_args(config, source)


def test_the_cli_guide_config_validates(tmp_path: Path) -> None:
    guide = (ROOT / "docs" / "cli.md").read_text()
    block = re.search(r"^```yaml\n(.*?)^```", guide, re.S | re.M)
    assert block, "docs/cli.md has no yaml example"
    config, source = load_config(write(tmp_path, block.group(1)))
    build_args(config, source)
