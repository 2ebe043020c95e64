"""Keras Xception weights <-> this model: file layouts, layer names and kernel transposes.

Three layouts hold the same layers: Keras 2 HDF5 (``xception_weights_tf_dim_ordering_tf_kernels.h5``:
``layer_names`` attribute, one group per layer with ``weight_names``), Keras 3 ``.weights.h5``
(``layers/<class>_<k>/vars/<i>``, recent versions add the layer name as an attribute) and Keras 3
``.keras`` archives (a zip around a ``.weights.h5``). Named layers are matched by name
(``block1_conv1``, ``block{n}_sepconv{k}``, ``..._bn``, ``predictions``). The four residual
shortcuts have automatic names that differ between Keras versions (``conv2d`` or ``conv2d_1``...),
so they are matched by creation order; files without names are matched by order within each layer
type, which is how Keras itself loads them. Kernels are HWIO (depthwise: (kh, kw, in, 1)).
Only ``h5py`` is needed, not Keras.
"""

from __future__ import annotations

import io
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import WeightsError
from ..models.xception import Shortcut, Xception
from .native import check_tensor

# Keras layer type -> its variables, in the order Keras stores them
VARIABLES = {
    "conv": ("kernel",),
    "sepconv": ("depthwise_kernel", "pointwise_kernel"),
    "bn": ("gamma", "beta", "moving_mean", "moving_variance"),
    "dense": ("kernel", "bias"),
}
_KERAS3_CLASSES = {"conv2d": "conv", "separable_conv2d": "sepconv",
                   "batch_normalization": "bn", "dense": "dense"}
_AUTO_NAME = re.compile(r"^(conv2d|batch_normalization)(?:_(\d+))?$")
# where each Keras variable goes in a torch module, and how HWIO becomes OIHW
_TARGETS = {
    "conv": {"kernel": ("weight", (3, 2, 0, 1))},
    "sepconv": {"depthwise_kernel": ("spatial.weight", (2, 3, 0, 1)),
                "pointwise_kernel": ("pointwise.weight", (3, 2, 0, 1))},
    "bn": {"gamma": ("weight", None), "beta": ("bias", None),
           "moving_mean": ("running_mean", None), "moving_variance": ("running_var", None)},
    "dense": {"kernel": ("weight", (1, 0)), "bias": ("bias", None)},
}
NUMERICS = {"padding": "tf_same", "stem_padding": "valid", "bn_eps": 1e-3}


@dataclass
class FileLayer:
    """One Keras layer with weights as found in a file."""

    name: str | None          # None when the file does not say (older Keras 3 files)
    kind: str                 # conv / sepconv / bn / dense
    order: int                # position among the file's layers of this kind
    where: str                # HDF5 group, for messages
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class Slot:
    """One Keras layer the model expects: its name (None for auto-named shortcuts) and module."""

    name: str | None
    kind: str
    module: str


def _text(v: object) -> str:
    return v.decode("utf8") if isinstance(v, bytes) else str(v)


def _suffix(name: str) -> int:
    m = re.search(r"_(\d+)$", name)
    return int(m.group(1)) if m else 0


def _kind_from_names(names: list[str], where: str) -> str:
    got = tuple(sorted(names))
    for kind, wanted in VARIABLES.items():
        if got == tuple(sorted(wanted)):
            return kind
    raise WeightsError(f"Keras layer {where!r} holds variables {list(names)}, which no layer of "
                       "Xception has (a bias on a conv? another architecture?)")


def _read_keras2(group) -> list[FileLayer]:
    layers: list[FileLayer] = []
    counts: dict[str, int] = {}
    for raw in group.attrs["layer_names"]:
        name = _text(raw)
        g = group[name]
        weight_names = [_text(w) for w in g.attrs.get("weight_names", [])]
        if not weight_names:
            continue
        short = [w.split("/")[-1].split(":")[0] for w in weight_names]
        kind = _kind_from_names(short, name)
        arrays = {s: np.asarray(g[w]) for s, w in zip(short, weight_names, strict=True)}
        layers.append(FileLayer(name, kind, counts.get(kind, 0), name, arrays))
        counts[kind] = counts.get(kind, 0) + 1
    return layers


def _read_keras3(group) -> list[FileLayer]:
    layers: list[FileLayer] = []
    for key in group["layers"]:
        g = group["layers"][key]
        if "vars" not in g or not len(g["vars"]):
            continue
        base = re.sub(r"_\d+$", "", key)
        if base not in _KERAS3_CLASSES:
            raise WeightsError(f"Keras file has a {base!r} layer ({key}) with weights; "
                               "Xception has none")
        kind = _KERAS3_CLASSES[base]
        values = [np.asarray(g["vars"][i]) for i in sorted(g["vars"], key=int)]
        if len(values) != len(VARIABLES[kind]):
            raise WeightsError(f"Keras layer {key!r} has {len(values)} variables; an Xception "
                               f"{kind} layer has {len(VARIABLES[kind])} {VARIABLES[kind]}")
        name = g["vars"].attrs.get("name")
        layers.append(FileLayer(_text(name) if name is not None else None, kind, _suffix(key),
                                f"layers/{key}", dict(zip(VARIABLES[kind], values, strict=True))))
    return sorted(layers, key=lambda la: (la.kind, la.order))


def read_layers(path: Path, container: str) -> tuple[list[FileLayer], str]:
    """Every layer with weights in a Keras file, and a description of the layout."""
    try:
        import h5py
    except ImportError:
        raise WeightsError("reading Keras files needs h5py: pip install h5py") from None
    try:
        if container == "keras_zip":
            with zipfile.ZipFile(path) as z:
                data = io.BytesIO(z.read("model.weights.h5"))
            f = h5py.File(data, "r")
        else:
            f = h5py.File(path, "r")
    except (OSError, zipfile.BadZipFile, KeyError) as e:
        raise WeightsError(f"{str(path)!r} is not a readable HDF5/Keras file ({e}); "
                           "is it truncated?") from None
    try:
        with f:
            group = f.get("model_weights", f)  # full-model files nest the weights
            if "layer_names" in group.attrs:
                return _read_keras2(group), "Keras 2 HDF5"
            if "layers" in group:
                layout = "Keras 3 .keras" if container == "keras_zip" else "Keras 3 .weights.h5"
                return _read_keras3(group), layout
    except (OSError, KeyError, ValueError) as e:  # a truncated file fails while reading data
        raise WeightsError(f"{str(path)!r} is damaged: {e}") from None
    raise WeightsError(f"{str(path)!r} is an HDF5 file but holds no Keras weights "
                       "(no 'layer_names' attribute, no 'layers' group)")


def keras_slots(model: nn.Module, head: bool = True) -> list[Slot]:
    """The Keras layers ``model`` corresponds to, in Keras' ``model.layers`` order."""
    if not isinstance(model, Xception):
        raise WeightsError("Keras Xception weights load into an Xception model only")
    slots = [Slot("block1_conv1", "conv", "stem.conv1"), Slot("block1_conv1_bn", "bn", "stem.bn1"),
             Slot("block1_conv2", "conv", "stem.conv2"), Slot("block1_conv2_bn", "bn", "stem.bn2")]
    for flow in ("entry_flow", "middle_flow", "exit_flow"):
        for name, block in getattr(model, flow).named_children():
            for k in range(len(block.sepconvs)):
                prefix = f"{name}_sepconv{k + 1}"
                slots.append(Slot(prefix, "sepconv", f"{flow}.{name}.sepconvs.{k}"))
                slots.append(Slot(f"{prefix}_bn", "bn", f"{flow}.{name}.bns.{k}"))
            if isinstance(block.shortcut, Shortcut):  # Keras creates it first, lists it last
                slots.append(Slot(None, "conv", f"{flow}.{name}.shortcut.conv"))
                slots.append(Slot(None, "bn", f"{flow}.{name}.shortcut.bn"))
    if head and isinstance(model.head.classifier, nn.Linear):
        slots.append(Slot("predictions", "dense", "head.classifier"))
    return slots


def _pair_by_name(slots: list[Slot], layers: list[FileLayer],
                  ignore: set[str]) -> list[tuple[Slot, FileLayer]]:
    by_name = {la.name: la for la in layers}
    pairs, used = [], set()
    for s in (s for s in slots if s.name):
        if s.name not in by_name:
            raise WeightsError(f"the Keras file has no layer {s.name!r}, which the model needs "
                               f"for {s.module!r}; is it a Keras Xception file?")
        pairs.append((s, by_name[s.name]))
        used.add(s.name)
    for kind in ("conv", "bn"):
        wanted = [s for s in slots if s.name is None and s.kind == kind]
        auto = sorted((la for la in layers if la.kind == kind and la.name not in used
                       and _AUTO_NAME.match(la.name or "")), key=lambda la: _suffix(la.name))
        if len(auto) != len(wanted):
            raise WeightsError(
                f"the model has {len(wanted)} residual shortcut {kind} layers, the Keras file "
                f"{len(auto)} auto-named ones ({[la.name for la in auto]})")
        pairs += zip(wanted, auto, strict=True)
        used.update(la.name for la in auto)
    extra = [la.name for la in layers if la.name not in used and la.name not in ignore]
    if extra:
        hint = (" (build the model with num_classes=1000, or load with ignore_head=True)"
                if "predictions" in extra else "")
        raise WeightsError(f"the Keras file has {len(extra)} layer(s) this model lacks: "
                           f"{extra[:5]}{hint}")
    return pairs


def _pair_by_order(slots: list[Slot], layers: list[FileLayer],
                   head_ignored: bool) -> list[tuple[Slot, FileLayer]]:
    pairs = []
    for kind in VARIABLES:
        wanted = [s for s in slots if s.kind == kind]
        found = sorted((la for la in layers if la.kind == kind), key=lambda la: la.order)
        if kind == "dense" and head_ignored:
            continue
        if len(found) != len(wanted):
            raise WeightsError(f"the model expects {len(wanted)} Keras {kind} layers, the file "
                               f"has {len(found)}: not the same architecture")
        pairs += zip(wanted, found, strict=True)
    return pairs


def to_state(model: nn.Module, layers: list[FileLayer], ignore_head: bool = False,
             source: str = "the file") -> tuple[dict[str, torch.Tensor], list[tuple[str, str]]]:
    """``model``'s state dict filled from Keras layers, and the (Keras layer, module) mapping.
    Every array is checked (dtype, finite values) before it is cast; ``source`` names the file."""
    slots = keras_slots(model, head=not ignore_head)
    named = any(la.name for la in layers)
    ignore = {"predictions"} if ignore_head else set()
    pairs = _pair_by_name(slots, layers, ignore) if named else \
        _pair_by_order(slots, layers, ignore_head)
    own = model.state_dict()
    state = dict(own)
    filled: set[str] = set()
    for slot, layer in pairs:
        for var, (attr, perm) in _TARGETS[slot.kind].items():
            key = f"{slot.module}.{attr}"
            if key not in own:
                raise WeightsError(f"Keras layer {layer.name or layer.where!r} has no place in "
                                   f"this model (no {key!r})")
            array = np.asarray(layer.arrays[var])
            name = f"{layer.name or layer.where}/{var}"
            if array.dtype.kind not in "biuf":  # strings, objects, compound types: no tensor
                raise WeightsError(f"{source}: Keras variable {name!r} holds {array.dtype} "
                                   "values, not numbers")
            value = torch.from_numpy(np.ascontiguousarray(array, array.dtype.newbyteorder("=")))
            check_tensor(name, value, own[key], source)  # before the cast, which hides dtypes
            value = value.to(torch.float32)
            if perm is not None and value.dim() == len(perm):
                value = value.permute(*perm)
            if value.shape != own[key].shape:
                raise WeightsError(
                    f"Keras layer {layer.name or layer.where!r} {var} has shape "
                    f"{tuple(layer.arrays[var].shape)} (as torch {tuple(value.shape)}) but the "
                    f"model's {key!r} has {tuple(own[key].shape)}")
            state[key] = value.to(own[key].dtype).contiguous()
            filled.add(key)
    skip = ("num_batches_tracked",) + (("head.classifier.",) if ignore_head else ())
    unfilled = [k for k in own if k not in filled and not any(s in k for s in skip)]
    if unfilled:
        raise WeightsError(f"{len(unfilled)} model tensor(s) have no counterpart in a Keras "
                           f"Xception file (first: {unfilled[0]!r}); is the model an aligned "
                           "variant or built with other options?")
    return state, [(layer.name or layer.where, slot.module) for slot, layer in pairs]


def num_classes_of(layers: list[FileLayer]) -> int:
    """Classes of the file's classifier (0 for ``include_top=False`` files)."""
    dense = [la for la in layers if la.kind == "dense"]
    if not dense:
        return 0
    return int(dense[-1].arrays["bias"].shape[0])


def in_chans_of(layers: list[FileLayer]) -> int:
    first = next((la for la in layers if la.name == "block1_conv1"), None)
    if first is None:
        convs = sorted((la for la in layers if la.kind == "conv"), key=lambda la: la.order)
        first = convs[0] if convs else None
    return int(first.arrays["kernel"].shape[2]) if first is not None else 3
