"""The project's weights format: safetensors whose metadata holds everything to rebuild the model.

Metadata keys (all strings, as safetensors requires): ``format``, ``arch`` (model family),
``model_config`` (JSON of the config dataclass), and optionally ``class_names`` and ``preprocess``
(JSON). No pickle is involved anywhere, so a weights file cannot execute code.

``safetensors`` is imported by the functions that read or write files, so importing the package
(or ``xception.weights``) does not load it.
"""

from __future__ import annotations

import json
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.preprocess import INTERPOLATIONS, Preprocess
from ..errors import DataError, WeightsError, WeightsNotFoundError
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
    """Write ``model``'s state (parameters and BN statistics) and its config, atomically.

    The bytes are made in memory and written with a plain file write, so a full disk or a
    read-only folder is an ``OSError`` that ``atomic_write`` reports in one line."""
    from safetensors.torch import save

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
    data = save(tensors, metadata=meta)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))
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
    for k, v in own.items():
        check_tensor(k, state[k], v, source)


def check_tensor(key: str, value: torch.Tensor, target: torch.Tensor, source: str) -> None:
    """The one rule every weights format goes through (project and bare safetensors/PyTorch files
    in ``check_state``, timm and Keras files as they are mapped): a tensor bound for one of the
    model's floating-point parameters or buffers must be floating point, and every value must be
    finite. Integer buffers (BatchNorm's ``num_batches_tracked``) take any real, finite number.
    ``key`` is the tensor's name in the file, ``source`` the file."""
    if target.is_floating_point() and not value.is_floating_point():
        raise WeightsError(f"{source}: tensor {key!r} is {str(value.dtype).removeprefix('torch.')}, "
                           f"but the model's is {str(target.dtype).removeprefix('torch.')}: weights "
                           "must be floating point (a damaged or mis-converted file?)")
    if value.is_complex() or (value.dtype == torch.bool and target.dtype != torch.bool):
        raise WeightsError(f"{source}: tensor {key!r} is {str(value.dtype).removeprefix('torch.')}, "
                           "not a real number type")
    if value.is_floating_point():
        bad = int((~torch.isfinite(value.float())).sum())
        if bad:
            raise WeightsError(f"{source}: tensor {key!r} holds {bad} non-finite value(s) (NaN or "
                               f"inf) of its {value.numel()}: damaged weights, or saved from a run "
                               "that diverged")


_PREPROCESS_MODES = ("minus_one_one",)  # the pixel scalings load_image knows
_MAX_IMAGE_SIZE = 8192                   # a larger input is a damaged file, not a model


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def parse_preprocess(value: Any, source: str, in_chans: int | None = None) -> Preprocess:
    """The ``preprocess`` metadata of a weights file as a ``Preprocess``, or a WeightsError naming
    the field that is malformed (``preprocess.image_size`` ...)."""
    if not isinstance(value, dict):
        raise WeightsError(f"{source}: metadata field 'preprocess' must be a JSON object, got "
                           f"{_short(value)}")
    known = [f.name for f in dataclass_fields(Preprocess)]
    unknown = [k for k in value if k not in known]
    if unknown:
        raise WeightsError(f"{source}: metadata field 'preprocess' has unknown key(s) {unknown}; "
                           f"known: {known}")
    for name in ("image_size", "in_chans"):
        if name not in value:
            raise WeightsError(f"{source}: metadata field 'preprocess' lacks {name!r}")
        if not _is_int(value[name]) or not 1 <= value[name] <= _MAX_IMAGE_SIZE:
            raise WeightsError(f"{source}: metadata field 'preprocess.{name}' must be a positive "
                               f"integer (at most {_MAX_IMAGE_SIZE}), got {_short(value[name])}")
    if in_chans is not None and value["in_chans"] != in_chans:
        raise WeightsError(f"{source}: metadata field 'preprocess.in_chans' is {value['in_chans']} "
                           f"but the model takes {in_chans} channel(s)")
    if value.get("mode", "minus_one_one") not in _PREPROCESS_MODES:
        raise WeightsError(f"{source}: metadata field 'preprocess.mode' must be one of "
                           f"{list(_PREPROCESS_MODES)}, got {_short(value['mode'])}")
    if value.get("interpolation", "bilinear") not in INTERPOLATIONS:
        raise WeightsError(f"{source}: metadata field 'preprocess.interpolation' must be one of "
                           f"{list(INTERPOLATIONS)}, got {_short(value['interpolation'])}")
    crop = value.get("crop_fraction")
    if crop is not None and (not isinstance(crop, (int, float)) or isinstance(crop, bool)
                             or not 0 < crop <= 1):
        raise WeightsError(f"{source}: metadata field 'preprocess.crop_fraction' must be null or a "
                           f"number in (0, 1], got {_short(crop)}")
    try:
        return Preprocess(**value)
    except DataError as e:  # a combination Preprocess refuses (a crop with the 'keras' resize)
        raise WeightsError(f"{source}: metadata field 'preprocess' is invalid: {e}") from None


def check_metadata(meta: dict[str, Any], model: nn.Module, source: str) -> None:
    """Refuse metadata ``predict``/``eval``/``convert`` would trip over later, naming the field."""
    if "class_names" in meta:
        names = meta["class_names"]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise WeightsError(f"{source}: metadata field 'class_names' must be a JSON list of "
                               f"strings, got {_short(names)}")
        classes = getattr(model, "num_classes", 0)
        if classes and len(names) != classes:
            raise WeightsError(f"{source}: metadata field 'class_names' has {len(names)} names but "
                               f"the model has {classes} classes")
    if "preprocess" in meta:
        parse_preprocess(meta["preprocess"], source, getattr(model.config, "in_chans", None))
    for name, kind, what in (("multi_label", bool, "true or false"),
                             ("model_name", str, "a string"),
                             ("data_config", dict, "a JSON object")):
        if name in meta and not isinstance(meta[name], kind):
            raise WeightsError(f"{source}: metadata field {name!r} must be {what}, got "
                               f"{_short(meta[name])}")


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit - 3]}..."


def load_native_model(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model a project weights file (``xception/1`` metadata) describes, loaded and in
    eval mode, with its metadata. Project files only: ``xception.load_model`` reads every format
    and calls this for project files."""
    p = resolve_weights_path(path)
    meta = read_metadata(p)
    if meta.get("format") != WEIGHTS_FORMAT or "model_config" not in meta:
        raise WeightsError(f"{str(p)!r} has no xception model config in its metadata; "
                           "build the model yourself and use load_weights(model, path)")
    if not isinstance(meta["model_config"], dict):
        raise WeightsError(f"{str(p)!r}: metadata field 'model_config' must be a JSON object, got "
                           f"{_short(meta['model_config'])}")
    try:
        cfg = model_config(meta["arch"], **meta["model_config"])  # every field is saved
    except (ValueError, TypeError, KeyError) as e:
        raise WeightsError(f"{str(p)!r} holds an invalid model config: {e}") from None
    model = build_model(cfg)
    check_metadata(meta, model, repr(str(p)))
    state = read_safetensors(p)
    check_state(model, state, repr(str(p)))
    model.load_state_dict(state)
    return model.eval(), meta
