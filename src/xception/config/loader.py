"""A typed loader for frozen dataclasses: JSON files and mappings in, checked values out.

Generic on purpose (it knows type hints, not the run's rules): a value of the wrong type, an
unknown key or a non-finite float fails here with the key's full name; ranges and choices are
``rules``'. Used for ``config.json`` / ``--config`` files and, key by key, for overrides.
"""

from __future__ import annotations

import functools
import json
import types
import typing
from collections.abc import Mapping
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, finite_float, show

SECTION_ALIASES = {"optim": "optimizer"}  # old section names, still read


def read_config_file(path: str | Path) -> Any:
    """The JSON value of a config file (``--config``, a run's ``config.json``), or a one-line
    ConfigError: missing, unreadable, not UTF-8 or not JSON. Not validated: see ``RunConfig.load``."""
    try:
        return json.loads(Path(path).read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ConfigError(f"config file {str(path)!r} is not readable JSON/UTF-8: {e}") from None


def rename_aliases(d: dict) -> dict:
    """``d`` with old section names replaced by today's (``optim`` -> ``optimizer``)."""
    d = dict(d)
    for old, new in SECTION_ALIASES.items():
        if old in d:
            if new in d:
                raise ConfigError(f"config has both {old!r} and {new!r}; use {new!r} only")
            d[new] = d.pop(old)
    return d


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    """Field name -> type hint of a dataclass, resolved once per class."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls)}


def build(cls: type, d: Any, where: str) -> Any:
    """``cls(**d)`` with every value checked against its hint; nested dataclasses recursively."""
    if not isinstance(d, dict):
        raise ConfigError(f"{where or 'config'} must be a mapping, got {type(d).__name__}")
    valid = field_types(cls)
    check_keys(d, valid, where)
    kwargs = {name: build(valid[name], value, f"{where}{name}.") if is_dataclass(valid[name])
              else check_value(where + name, value, valid[name]) for name, value in d.items()}
    return cls(**kwargs)


def check_keys(d: Mapping[str, Any], valid: Mapping[str, Any], where: str) -> None:
    unknown = sorted(set(d) - set(valid))
    if unknown:
        raise ConfigError(f"unknown key(s) {[where + k for k in unknown]}; "
                          f"valid: {[where + k for k in valid]}")


_TYPE_TESTS = {int: lambda v: isinstance(v, int) and not isinstance(v, bool),
               float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
               bool: lambda v: isinstance(v, bool),
               str: lambda v: isinstance(v, str)}


def check_value(key: str, value: Any, hint: Any) -> Any:
    """``value`` if it fits ``hint`` (an int is a float; ``None`` fits an optional), else a
    ConfigError naming ``key``. Floats come back as ``float`` and must be finite."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        hint = next(o for o in options if o is not type(None))
        origin = typing.get_origin(hint)
    if origin in (dict, Mapping) or hint is Mapping:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        return value
    if hint in _TYPE_TESTS and not _TYPE_TESTS[hint](value):
        raise ConfigError(f"{key} must be {hint.__name__}, got {show(value)}")
    if hint is float:
        value = finite_float(key, value)
    return value


def section_dict(section: Any) -> dict[str, Any]:
    """A section's fields as plain values (a read-only mapping as a plain dict)."""
    return {f.name: _plain(getattr(section, f.name)) for f in fields(section)}


def flatten(cfg: Any) -> dict[str, Any]:
    """``{"section.key": value}`` over every section of a run config (the one flattening)."""
    return {f"{s.name}.{k}": v for s in fields(cfg)
            for k, v in section_dict(getattr(cfg, s.name)).items()}


def _plain(value: Any) -> Any:
    return dict(value) if isinstance(value, Mapping) else value
