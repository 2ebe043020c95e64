"""Errors a user can cause and fix, and the checks of settings values that raise them.

The CLI prints these as one line, without a traceback. ``check_fields`` is the one mechanism
that holds a frozen settings section to its table of choices and ranges (the run config's in
``config.rules``, the data section's in ``data.section``): a bad value fails with its full key
(``train.epochs must be >= 1, got 0``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import fields
from typing import Any


class XceptionError(Exception):
    """Base class of every user-facing error of the package."""


class ConfigError(XceptionError, ValueError):
    """A bad model, run or CLI setting (unknown key, out-of-range value, unknown name)."""


class InputError(XceptionError, ValueError):
    """A tensor or image the model cannot take (wrong rank, channels or too small)."""


class WeightsError(XceptionError, ValueError):
    """A weights file that is corrupt, truncated or made for another architecture."""


class WeightsNotFoundError(XceptionError, FileNotFoundError):
    """A weights file or run folder that does not exist."""


class OutputError(XceptionError, OSError):
    """A file or folder that cannot be written: read-only, not a folder, disk full."""


class DataError(XceptionError, ValueError):
    """A dataset or image that cannot be read."""


class TrainingError(XceptionError, RuntimeError):
    """Training that cannot go on (losses that stay non-finite); the last good checkpoint is kept."""


Range = tuple[Callable[[Any], bool], str]  # (test, what the value must be)


def check_fields(section: Any, name: str, choices: Mapping[str, tuple],
                 ranges: Mapping[str, Range]) -> None:
    """``section``'s fields against ``choices`` and ``ranges`` (keyed ``name.field``); every
    float field must be finite (NaN and inf would pass or fail range tests by accident)."""
    for f in fields(section):
        key, value = f"{name}.{f.name}", getattr(section, f.name)
        if isinstance(value, float):
            finite_float(key, value)
        if key in choices and value not in choices[key]:
            raise ConfigError(f"{key}={value!r} is not valid; choose one of {list(choices[key])}")
        if key in ranges and not ranges[key][0](value):
            raise ConfigError(f"{key} must be {ranges[key][1]}, got {value!r}")


def finite_float(key: str, value: Any) -> float:
    """``float(value)``, refusing what is not finite (JSON's Infinity/NaN, 1e999, a 400-digit
    integer) by name."""
    try:
        value = float(value)
    except OverflowError:  # an integer too large for a float
        raise ConfigError(f"{key} must be a finite number, got {show(value)}") from None
    if not math.isfinite(value):
        raise ConfigError(f"{key} must be a finite number, got {show(value)}")
    return value


def show(value: Any, limit: int = 60) -> str:
    """``repr(value)``, shortened for a one-line message (a 400-digit number)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit - 3]}..."
