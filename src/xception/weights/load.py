"""Load any supported weights file: detect the format, map names, keep the source's numerics.

``load_weights(model, path)`` fills an existing model; ``load_model(path)`` builds the model the file
describes; ``convert(src, dst)`` writes the project's safetensors. Every check runs before the model
or any file is touched, so a bad file leaves everything as it was. Every format's tensors pass
``native.check_tensor`` (floating point where the model is, finite values) and a project file's
metadata ``native.check_metadata`` (class names, preprocessing), each error naming the key and file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.imagenet import NUM_CLASSES, imagenet_class_names
from ..data.preprocess import Preprocess, keras_imagenet
from ..errors import ConfigError, WeightsError
from ..models.registry import create_model
from ..models.xception import Xception
from . import keras, native, timm
from .detect import read_torch, safetensors_metadata, sniff

NUMERICS_KEYS = ("padding", "stem_padding", "bn_eps")


@dataclass
class Source:
    """What a weights file holds, read once."""

    path: Path
    kind: str                 # "xception" (project file), "state_dict", "keras", "timm_legacy", ...
    description: str
    state: dict[str, torch.Tensor] | None = None
    keras_layers: list[keras.FileLayer] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def numerics(self) -> dict[str, Any] | None:
        """Padding rules and BN eps the weights were trained/ported with (None: unknown)."""
        if self.kind == "keras":
            return dict(keras.NUMERICS)
        if self.kind in timm.NUMERICS:
            return dict(timm.NUMERICS[self.kind])
        cfg = self.meta.get("model_config")
        if isinstance(cfg, dict) and all(k in cfg for k in NUMERICS_KEYS):
            return {k: cfg[k] for k in NUMERICS_KEYS}
        return None


@dataclass
class Loaded:
    """The result of an import: which source tensor went where."""

    source: Source
    pairs: list[tuple[str, str]]


def read_source(path: str | Path) -> Source:
    """Detect the format of ``path`` (a file, or a run folder) and read it."""
    p = native.resolve_weights_path(path)
    container = sniff(p)
    if container in ("hdf5", "keras_zip"):
        layers, layout = keras.read_layers(p, container)
        return Source(p, "keras", f"Keras Xception weights ({layout})", keras_layers=layers)
    if container == "safetensors":
        raw = safetensors_metadata(p)
        if raw.get("format") == native.WEIGHTS_FORMAT:
            return Source(p, "xception", "xception safetensors", meta=native.read_metadata(p))
        state, what = native.read_safetensors(p), "safetensors"
    else:
        state, what = read_torch(p), "PyTorch"
    kind = timm.kind_of(state)
    if kind in timm.DESCRIPTION:
        return Source(p, kind, f"{timm.DESCRIPTION[kind]} ({what})", state=state)
    return Source(p, "state_dict", f"{what} state dict", state=state)


def _map(model: nn.Module, src: Source,
         ignore_head: bool) -> tuple[dict[str, torch.Tensor], list[tuple[str, str]]]:
    """The full, checked state dict for ``model`` from ``src``, without touching the model."""
    where = repr(str(src.path))
    if src.kind == "keras":
        return keras.to_state(model, src.keras_layers, ignore_head, source=where)
    if src.kind in timm.NUMERICS:
        return timm.to_state(model, src.state, src.kind, ignore_head, source=where)
    state = native.read_safetensors(src.path) if src.kind == "xception" else src.state
    if ignore_head:
        head = {k: v for k, v in model.state_dict().items() if k.startswith("head.classifier.")}
        state = {**{k: v for k, v in state.items() if not k.startswith("head.classifier.")}, **head}
    native.check_state(model, state, where)  # keys, shapes, dtypes, finite values
    return state, [(k, k) for k in state]


def load_weights(model: nn.Module, path: str | Path, *, numerics: str = "source",
                 ignore_head: bool = False) -> nn.Module:
    """Load any supported weights file into ``model``: every key and shape must fit.

    ``numerics="source"`` (default) switches an Xception to the padding rules and BatchNorm eps the
    weights were made with (Keras: TF "same", 1e-3; timm's legacy port: symmetric, 1e-5), so it
    computes the same function as their source; ``"keep"`` leaves the model's own. ``ignore_head``
    loads everything but the classifier (e.g. ImageNet weights into a 10-class model).
    """
    import_weights(model, read_source(path), numerics=numerics, ignore_head=ignore_head)
    return model


def import_weights(model: nn.Module, src: Source, *, numerics: str = "source",
                   ignore_head: bool = False) -> Loaded:
    """``load_weights`` for a source already read; returns what went where."""
    if numerics not in ("source", "keep"):
        raise ConfigError(f"numerics={numerics!r}; choose 'source' or 'keep'")
    state, pairs = _map(model, src, ignore_head)
    wanted = src.numerics
    if numerics == "source" and wanted and isinstance(model, Xception) \
            and any(getattr(model.config, k) != v for k, v in wanted.items()):
        model.set_numerics(**wanted)
    model.load_state_dict(state)
    return Loaded(src, pairs)


def _infer_model(src: Source, name: str | None, overrides: dict[str, Any]) -> nn.Module:
    if name is not None:
        return create_model(name, **overrides)
    if src.kind == "keras":
        return create_model("xception", num_classes=keras.num_classes_of(src.keras_layers),
                            in_chans=keras.in_chans_of(src.keras_layers), **overrides)
    if src.kind in timm.NUMERICS:
        settings = {"num_classes": timm.num_classes_of(src.state, src.kind),
                    "in_chans": timm.in_chans_of(src.state, src.kind),
                    **timm.NUMERICS[src.kind], **overrides}
        return create_model(timm.config_name(src.state, src.kind), **settings)
    raise WeightsError(f"{str(src.path)!r} is a bare {src.description} without a model config; "
                       "say which model it is (e.g. `xception convert SRC DST --model xception` or "
                       "load_weights(create_model(...), path))")


def _default_meta(src: Source, model: nn.Module) -> dict[str, Any]:
    """Class names and preprocessing for imported weights, so ``predict`` works on them."""
    meta: dict[str, Any] = {"source_format": src.description, "source_file": src.path.name}
    cfg = model.config
    if getattr(model, "num_classes", 0) == NUM_CLASSES:
        meta["class_names"] = list(imagenet_class_names())
    if src.kind == "keras":
        meta["preprocess"] = keras_imagenet(cfg.in_chans).to_dict()
    elif src.kind in timm.NUMERICS:  # timm's: [-1, 1], 299 px, bicubic resize + centre crop
        crop = timm.EVAL_CROP[timm.config_name(src.state, src.kind)]
        meta["preprocess"] = Preprocess(299, cfg.in_chans, "minus_one_one", "bicubic",
                                        crop).to_dict()
    else:  # a bare state dict: ImageNet-sized [-1, 1] inputs, the whole image
        meta["preprocess"] = Preprocess(299, cfg.in_chans).to_dict()
    return meta


def load_model(path: str | Path, name: str | None = None,
               **overrides: Any) -> tuple[nn.Module, dict[str, Any]]:
    """The model a weights file describes, loaded, in eval mode, with its metadata.

    Project files carry their config; Keras and timm files imply theirs (classes and input
    channels read from the tensors). ``name``/``overrides`` pick the model for bare state dicts.
    """
    model, _, meta = _build_and_load(read_source(path), name, overrides)
    return model.eval(), meta


def _build_and_load(src: Source, name: str | None,
                    overrides: dict[str, Any]) -> tuple[nn.Module, Loaded, dict[str, Any]]:
    if src.kind == "xception" and name is None and not overrides:
        model, meta = native.load_native_model(src.path)
        return model, Loaded(src, [(k, k) for k in model.state_dict()]), meta
    model = _infer_model(src, name, overrides)
    loaded = import_weights(model, src)
    if src.kind == "xception":
        native.check_metadata(src.meta, model, repr(str(src.path)))
    meta = dict(src.meta) if src.kind == "xception" else _default_meta(src, model)
    meta.update(arch="xception", model_config=model.config.to_dict())
    return model, loaded, meta


def load_source_model(src: Source) -> tuple[nn.Module, dict[str, Any]]:
    """The model ``src`` describes (Keras, timm or project weights), loaded, with its metadata:
    what ``train.init`` reads the pretrained tensors from."""
    model, _, meta = _build_and_load(src, None, {})
    return model, meta


def convert(src_path: str | Path, dst: str | Path, name: str | None = None,
            **overrides: Any) -> tuple[nn.Module, Loaded, Path]:
    """Any supported format -> the project's safetensors (config, class names, preprocessing)."""
    model, loaded, meta = _build_and_load(read_source(src_path), name, overrides)
    extra = {k: v for k, v in meta.items()
             if k not in ("class_names", "preprocess", "format", "arch", "model_config")}
    out = native.save_weights(model, dst, class_names=meta.get("class_names"),
                              preprocess=meta.get("preprocess"), extra=extra)
    return model, loaded, out
