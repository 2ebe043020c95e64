"""Saved weights ready for inference, and what their metadata says about inputs and classes."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..data.preprocess import Preprocess
from ..distributed import resolve_device
from ..errors import WeightsError
from ..fast import optimize_for_inference
from ..weights import load_model
from ..weights.native import parse_preprocess


def load_for_inference(path: str | Path, device: str = "auto",
                       optimize: bool = True) -> tuple[nn.Module, dict, torch.device]:
    """The saved model on ``device``, ready for inference (BatchNorm folded, channels_last: see
    ``optimize_for_inference``; ``optimize=False``: the plain eval-mode model), with its metadata."""
    dev = resolve_device(device)
    model, meta = load_model(path)
    model = model.to(dev).eval()
    return (optimize_for_inference(model) if optimize else model), meta, dev


def preprocess_of(meta: dict) -> Preprocess:
    """How these weights want an image file prepared (their ``preprocess`` metadata)."""
    if "preprocess" not in meta:
        raise WeightsError("these weights carry no preprocessing description; cannot read images")
    return parse_preprocess(meta["preprocess"], "these weights' metadata")


def class_names_of(meta: dict, model: nn.Module) -> list[str]:
    """The weights' class names; their indices as text when the metadata has none."""
    names = meta.get("class_names")
    return list(names) if names else [str(i) for i in range(getattr(model, "num_classes", 0))]
