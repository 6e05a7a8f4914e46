"""The config layer's error and the checks every schema shares: positive values, writable paths, and
importing the class a `_target_` names."""

from __future__ import annotations

import importlib
import math
import tempfile
from pathlib import Path

from capdistill.errors import CapdistillError


class ConfigError(CapdistillError):
    """A bad configuration value, reported as one line before any compute."""


def positive(where: str, **values: float | None) -> None:
    """Raise ConfigError naming the first of `values` that is not a positive finite number (`where`: its config
    path). NaN and infinity fail too: no size, count, rate or timeout means anything at either."""
    for key, value in values.items():
        if value is not None and not math.isfinite(value):
            raise ConfigError(f"{where}{key} must be a finite positive number, got {value!r}")
        if value is None or value <= 0:
            raise ConfigError(f"{where}{key} must be positive, got {value!r}")


def not_empty(where: str, **values: str) -> None:
    """Raise ConfigError naming the first of `values` that is empty (`key=` on the command line): an empty
    path would silently mean the working directory, an empty name labels nothing."""
    for key, value in values.items():
        if not str(value).strip():
            raise ConfigError(f"{where}{key} is empty: give it a value, or leave it out for its default")


def check_writable(path: str | Path, what: str) -> None:
    """Fail early, in one line, if `path` cannot be created or written."""
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path):
            pass
    except OSError as err:
        raise ConfigError(f"{what} {path} is not writable ({err.strerror or err})") from None


def locate(target: str, group: str) -> type:
    """The object a dotted `_target_` path names, imported without Hydra's error logging."""
    module, _, attr = target.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError) as err:
        raise ConfigError(f"{group}._target_: cannot import {target!r} ({type(err).__name__})") from None
