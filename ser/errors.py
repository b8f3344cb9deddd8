"""The errors that end a run with one clear ``error:`` line (see ``ser.config.run_reporting_errors``).

They live at the bottom of the import graph so that every layer can raise them without importing
the layers above it.
"""
from __future__ import annotations


class ConfigError(ValueError):
    """A config value is wrong; the message names the key and what to do."""


class PPOConfigError(ConfigError):
    """A PPO stage setting (or its reward model / policy path) is wrong."""


class DataError(ValueError):
    """Bad input data or data configuration; the message names the file/row/key and the fix."""


class ModelNotFound(RuntimeError):
    """Neither the hub nor an offline copy can provide the model; the message says what to do."""
