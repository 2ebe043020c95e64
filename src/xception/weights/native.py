"""The project's weights format: safetensors whose metadata holds everything to rebuild the model.

Metadata keys (all strings, as safetensors requires): ``format``, ``arch`` (model family),
``model_config`` (JSON of the config dataclass), and optionally ``class_names`` and ``preprocess``
(JSON). No pickle is involved anywhere, so a weights file cannot execute code.

``safetensors`` is imported by the functions that read or write files, so importing the package
(or ``xception.weights``) does not load it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import WeightsError, WeightsNotFoundError
from ..files import atomic_write
from ..models.registry import arch_of, build_model, model_config

WEIGHTS_FORMAT = "xception/1"  # the metadata "format" of the project's files
WEIGHTS_NAME = "model.safetensors"


def resolve_weights_path(path: str | Path) -> Path:
    """A weights file, or the ``model.safetensors`` inside a run folder."""
    p = Path(path)
    if p.is_dir():
        p = p / WEIGHTS_NAME
    if not p.is_file():
        raise WeightsNotFoundError(f"weights file {str(p)!r} does not exist")
    return p


def save_weights(model: nn.Module, path: str | Path, class_names: list[str] | None = None,
                 preprocess: dict | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model``'s state (parameters and BN statistics) and its config, atomically."""
    from safetensors.torch import save_file

    cfg = model.config
    meta = {"format": WEIGHTS_FORMAT, "arch": arch_of(cfg), "model_config": json.dumps(cfg.to_dict())}
    if class_names is not None:
        meta["class_names"] = json.dumps(list(class_names))
    if preprocess is not None:
        meta["preprocess"] = json.dumps(preprocess)
    for k, v in (extra or {}).items():
        meta[k] = v if isinstance(v, str) else json.dumps(v)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    path = Path(path)
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))
    return path


def _open(path: Path):
    from safetensors import safe_open

    try:
        return safe_open(str(path), framework="pt")
    except Exception as e:  # safetensors raises its own error types for every kind of damage
        raise WeightsError(f"{str(path)!r} is not a readable safetensors file ({e}); "
                           "is it truncated or another format?") from None


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata of a weights file, JSON values decoded."""
    p = resolve_weights_path(path)
    with _open(p) as f:
        raw = f.metadata() or {}
    out: dict[str, Any] = {}
    for k, v in raw.items():
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def read_safetensors(p: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file (the project's, or a bare state dict), on the CPU."""
    with _open(p) as f:
        try:
            return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
        except Exception as e:
            raise WeightsError(f"{str(p)!r} is damaged: {e}") from None


def check_state(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Raise a WeightsError naming the first key or shape of ``state`` that does not fit."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise WeightsError(
            f"{source} does not fit this model: {len(missing)} missing key(s) "
            f"(first: {missing[:1]}), {len(unexpected)} unexpected (first: {unexpected[:1]})")
    for k, v in own.items():
        if state[k].shape != v.shape:
            raise WeightsError(f"{source}: layer {k!r} has shape {tuple(state[k].shape)} in the "
                               f"file but {tuple(v.shape)} in the model")


def load_native_model(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model a project weights file (``xception/1`` metadata) describes, loaded and in
    eval mode, with its metadata. Project files only: ``xception.load_model`` reads every format
    and calls this for project files."""
    p = resolve_weights_path(path)
    meta = read_metadata(p)
    if meta.get("format") != WEIGHTS_FORMAT or "model_config" not in meta:
        raise WeightsError(f"{str(p)!r} has no xception model config in its metadata; "
                           "build the model yourself and use load_weights(model, path)")
    try:
        cfg = model_config(meta["arch"], **meta["model_config"])  # every field is saved
    except (ValueError, TypeError, KeyError) as e:
        raise WeightsError(f"{str(p)!r} holds an invalid model config: {e}") from None
    model = build_model(cfg)
    state = read_safetensors(p)
    check_state(model, state, repr(str(p)))
    model.load_state_dict(state)
    return model.eval(), meta
