"""Starting a run from pretrained weights (``train.init``): any file or run folder ``convert``
reads (Keras ``.h5`` / ``.keras``, timm / Cadene ``.pth``, this project's safetensors).

Every tensor whose name and shape match is loaded. The head is new where its shapes differ,
and the classifier is new unless the weights were trained on the very classes of the data (the
same names in the same order): fine-tuning ImageNet weights on three classes replaces it,
continuing on the same data keeps it. A backbone tensor that does not fit means weights of
another architecture or width: one error names the first of them, before any step or file.
A 1-channel data set with 3-channel weights gets the stem's filters summed over the input
channels (what timm does), and the line says so. The weights' padding rules and BatchNorm eps
(Keras: TF "same", 1e-3) become the run's model settings (``with_source_numerics``), so the
pretrained features are computed as their source computed them and a resume rebuilds the same
function.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config import RunConfig, with_changes
from ..errors import WeightsError
from ..weights.load import NUMERICS_KEYS, Source, load_source_model, read_source

HEAD, CLASSIFIER = "head.", "head.classifier."


def read_init(path: str) -> Source:
    """The weights ``train.init`` names, read once (format detected; errors name the file)."""
    return read_source(path)


def with_source_numerics(cfg: RunConfig, src: Source) -> RunConfig:
    """``cfg`` with the weights' padding rules and BatchNorm eps as model settings, where the
    model has those settings and the run did not set them itself."""
    wanted = src.numerics or {}
    config = cfg.model.config
    changes = {key: value for key, value in wanted.items()
               if key in NUMERICS_KEYS and hasattr(config, key)
               and key not in cfg.model.overrides and getattr(config, key) != value}
    if not changes:
        return cfg
    return with_changes(cfg, {"model": {"name": cfg.model.name,
                                        "overrides": {**cfg.model.overrides, **changes}}})


@dataclass(frozen=True)
class Initialised:
    """What ``load_pretrained`` did, for the run's log."""

    source: str
    loaded: int
    total: int
    new: tuple[str, ...]
    adapted: str = ""

    def __str__(self) -> str:
        new = f"; new: {', '.join(self.new)}" if self.new else ""
        adapted = f"; {self.adapted}" if self.adapted else ""
        return (f"initialised from {self.source}: loaded {self.loaded} of {self.total} "
                f"tensors{new}{adapted}")


def source_state(src: Source) -> tuple[dict[str, torch.Tensor], list[str] | None]:
    """The weights as this project's state dict, and their class names (None: unknown)."""
    if src.kind == "state_dict":  # a bare state dict in this project's naming
        return dict(src.state or {}), None
    model, meta = load_source_model(src)
    return model.state_dict(), meta.get("class_names")


def _adapt_stem(key: str, value: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
    """A first conv's filters for another input-channel count: summed over the channels for one
    channel, else tiled and rescaled (None: not a first-conv mismatch)."""
    if value.dim() != 4 or value.shape[0] != target.shape[0] or value.shape[2:] != target.shape[2:]:
        return None
    theirs, ours = value.shape[1], target.shape[1]
    if ours == 1:
        return value.sum(dim=1, keepdim=True)
    repeat = -(-ours // theirs)
    return value.repeat(1, repeat, 1, 1)[:, :ours] * (theirs / ours)


@torch.no_grad()
def load_pretrained(model: nn.Module, src: Source, class_names: list[str] | tuple[str, ...]
                    ) -> Initialised:
    """Load ``src`` into ``model`` (module docstring); the model is untouched on error."""
    theirs, their_classes = source_state(src)
    ours = model.state_dict()
    same_classes = their_classes is not None and list(their_classes) == list(class_names)
    state: dict[str, torch.Tensor] = {}
    new: list[str] = []
    misfit: list[str] = []
    adapted = ""
    first_conv = next((k for k, v in ours.items() if v.dim() == 4), None)
    for key, target in ours.items():
        value = theirs.get(key)
        if key.startswith(HEAD):
            fits = value is not None and value.shape == target.shape
            if fits and (same_classes or not key.startswith(CLASSIFIER)):
                state[key] = value.to(target.dtype)
            else:
                new.append(key)
            continue
        if value is not None and value.shape == target.shape:
            state[key] = value.to(target.dtype)
            continue
        stem = _adapt_stem(key, value, target) if key == first_conv and value is not None else None
        if stem is not None:
            state[key] = stem.to(target.dtype)
            adapted = (f"{key}: {value.shape[1]}-channel filters adapted to {target.shape[1]} "
                       "input channel(s) (summed over the channels)" if target.shape[1] == 1 else
                       f"{key}: {value.shape[1]}-channel filters tiled to {target.shape[1]}")
            continue
        misfit.append(f"{key} (the run's model: {tuple(target.shape)}, the weights: "
                      f"{'missing' if value is None else tuple(value.shape)})")
    misfit += [f"{key} (in the weights, not in the run's model)" for key in theirs
               if key not in ours and not key.startswith(HEAD)]
    if misfit:
        raise WeightsError(
            f"{str(src.path)!r} ({src.description}) does not fit the run's model: "
            f"{len(misfit)} tensor(s) do not match, first {'; '.join(misfit[:3])}. The weights "
            "are of another architecture or width: choose the model they were made for "
            "(--model, and its --set model.* settings)")
    model.load_state_dict({**ours, **state})
    return Initialised(f"{src.description} {src.path.name}", len(state), len(ours),
                       tuple(_short(new)), adapted)


def _short(keys: list[str]) -> list[str]:
    """New tensors named per module ("head.classifier (weight, bias)")."""
    modules: dict[str, list[str]] = {}
    for key in keys:
        module, _, leaf = key.rpartition(".")
        modules.setdefault(module, []).append(leaf)
    return [f"{module} ({', '.join(leaves)})" for module, leaves in modules.items()]
