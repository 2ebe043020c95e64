"""Changing a run config: the ``--set section.key=value`` grammar, and changes as typed values.

Only ``--set`` text is parsed (``parse_assignments``); flags and files arrive as typed values.
Changes are nested mappings ``{section: {key: value}}``. In the model section ``name`` and
``overrides`` are the section's own keys and every other key is a field of the model's config
(``sections``' rule). ``with_changes`` makes a new config from an old one section by section,
without a dict round trip; ``merge_changes`` stacks layers (recipe < ``--config`` file < flags <
``--set``) so that a command builds its config, and its model config, once.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from ..errors import ConfigError
from .loader import SECTION_ALIASES, check_keys, check_value, field_types, rename_aliases
from .sections import ModelSection, RunConfig

MODEL_KEYS = ("name", "overrides")  # the model section's own keys; any other is a model field

Changes = dict[str, dict[str, Any]]


def parse_value(text: str) -> Any:
    """A CLI value: JSON when it parses (numbers, true/false, null, lists), else the raw string."""
    try:
        return json.loads(text)
    except ValueError:  # not JSON (or an integer past Python's digit limit): the text itself
        return text


def parse_assignments(assignments: Iterable[str]) -> Changes:
    """``["optimizer.lr=0.3", "model.residual=false"]`` -> ``{"optimizer": {"lr": 0.3}, ...}``.

    Keys are checked here (unknown section or key: the valid ones listed); a text field keeps the
    text as typed (``data.val_split=2012`` stays "2012"). Later assignments win.
    """
    sections = field_types(RunConfig)
    changes: Changes = {}
    for item in assignments:
        key, sep, raw = item.partition("=")
        parts = key.strip().split(".")
        if not sep or len(parts) != 2 or not all(parts):
            raise ConfigError(f"--set expects section.key=value, got {item!r}")
        section, name = SECTION_ALIASES.get(parts[0], parts[0]), parts[1]
        if section not in sections:
            raise ConfigError(f"unknown section {parts[0]!r} in {item!r}; valid: {list(sections)}")
        known = field_types(sections[section])
        if section != "model" and name not in known:
            raise ConfigError(f"unknown key {key!r}; valid: {[f'{section}.{k}' for k in known]}")
        value = parse_value(raw)
        if known.get(name) is str and not isinstance(value, str):
            value = raw
        changes.setdefault(section, {})[name] = value
    return changes


def merge_changes(*layers: Mapping[str, Any]) -> Changes:
    """Layers of changes, later ones winning, as one mapping ``RunConfig.from_dict`` takes.

    A layer's ``model.overrides`` replaces the model fields set so far; its other model keys
    (fields) are added to them.
    """
    merged: Changes = {}
    for layer in layers:
        if not isinstance(layer, Mapping):
            raise ConfigError(f"config must be a mapping, got {type(layer).__name__}")
        for section, values in rename_aliases(dict(layer)).items():
            if not isinstance(values, Mapping):
                raise ConfigError(f"{section} must be a mapping, got {type(values).__name__}")
            target = merged.setdefault(section, {})
            if section == "model":
                _merge_model(target, values)
            else:
                target.update(values)
    return merged


def _merge_model(target: dict[str, Any], values: Mapping[str, Any]) -> None:
    """The model section's rule, applied to ``target`` in place: ``overrides`` replaces the
    model fields so far, ``name`` the name, and every other key is one model field added."""
    if "overrides" in values:
        target["overrides"] = dict(check_value("model.overrides", values["overrides"], Mapping))
    if "name" in values:
        target["name"] = values["name"]
    fields_set = {k: v for k, v in values.items() if k not in MODEL_KEYS}
    if fields_set:
        target["overrides"] = {**target.get("overrides", {}), **fields_set}


def with_changes(cfg: RunConfig, changes: Mapping[str, Any]) -> RunConfig:
    """``cfg`` with typed ``changes`` applied: each changed section made once, the run config
    validated once; sections without changes are the same objects (the model is not parsed
    again unless its section changes)."""
    changes = rename_aliases(dict(changes))
    sections = field_types(RunConfig)
    check_keys(changes, sections, "")
    new: dict[str, Any] = {}
    for section, values in changes.items():
        if not isinstance(values, Mapping):
            raise ConfigError(f"{section} must be a mapping, got {type(values).__name__}")
        if not values:
            continue
        old = getattr(cfg, section)
        if section == "model":
            new[section] = _changed_model(old, values)
            continue
        known = field_types(type(old))
        check_keys(values, known, f"{section}.")
        new[section] = replace(old, **{k: check_value(f"{section}.{k}", v, known[k])
                                       for k, v in values.items()})
    return replace(cfg, **new) if new else cfg


def apply_overrides(cfg: RunConfig, assignments: Iterable[str]) -> RunConfig:
    """Apply ``section.key=value`` strings; ``model.<field>=v`` goes to the model's overrides."""
    return with_changes(cfg, parse_assignments(assignments))


def _changed_model(old: ModelSection, values: Mapping[str, Any]) -> ModelSection:
    merged = {"name": old.name, "overrides": dict(old.overrides)}
    _merge_model(merged, values)
    return ModelSection(check_value("model.name", merged["name"], str), merged["overrides"])
