"""Errors a user can cause and fix. The CLI prints these as one line, without a traceback."""

from __future__ import annotations


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
