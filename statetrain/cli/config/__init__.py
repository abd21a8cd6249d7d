"""The ``statetrain train`` config file: its schema, how it is read (with line numbers) and built."""

from statetrain.cli.config.schema import TrainConfig, config_json_schema
from statetrain.cli.config.source import ConfigError, ConfigSource, load_config

__all__ = ["ConfigError", "ConfigSource", "TrainConfig", "config_json_schema", "load_config"]
