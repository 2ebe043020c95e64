"""Using saved weights: rebuild the model, evaluate it on its data, classify image files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import RunConfig
from .data import build_datasets, make_loader
from .data.preprocess import load_image
from .distributed import resolve_device
from .errors import ConfigError, WeightsError
from .evaluation import evaluate
from .fast import optimize_for_inference
from .weights import load_model
from .weights.native import parse_preprocess


def load_for_inference(path: str | Path, device: str = "auto",
                       optimize: bool = True) -> tuple[nn.Module, dict, torch.device]:
    """The saved model on ``device``, ready for inference (BatchNorm folded, channels_last: see
    ``optimize_for_inference``; ``optimize=False``: the plain eval-mode model), with its metadata."""
    dev = resolve_device(device)
    model, meta = load_model(path)
    model = model.to(dev).eval()
    return (optimize_for_inference(model) if optimize else model), meta, dev


def evaluate_saved(path: str | Path, batch_size: int = 256, device: str = "auto") -> dict[str, Any]:
    """Top-1/top-5/loss (and MAP@100 / mAP for multi-label data) of saved weights on the
    validation split they were trained against."""
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    model, meta, dev = load_for_inference(path, device)
    if "data_config" not in meta:
        raise WeightsError(f"{str(path)!r} does not say which data it was trained on "
                           "(no data_config in its metadata)")
    # the saved model section too, so data.image_size is checked against that model's minimum
    section = {"name": meta["model_name"], "overrides": meta.get("model_config", {})} \
        if "model_name" in meta else {}
    data = RunConfig.from_dict({"model": section, "data": meta["data_config"]}).data
    _, val_ds, info = build_datasets(data)
    return {"data": data.name, **evaluate(model, make_loader(val_ds, batch_size, False), dev,
                                          class_weights=info.class_weights)}


@torch.no_grad()
def predict_files(model: nn.Module, meta: dict, paths: list[str], top_k: int = 5,
                  device: torch.device | None = None) -> list[tuple[str, list[tuple[str, float]]]]:
    """Top-k (class name, probability) per image. Every image is read before any is classified,
    so one unreadable file fails the call up front."""
    if "preprocess" not in meta:
        raise WeightsError("these weights carry no preprocessing description; cannot read images")
    pre = parse_preprocess(meta["preprocess"], "these weights' metadata")
    names = meta.get("class_names")
    batch = torch.stack([load_image(p, pre) for p in paths])
    device = device or next(model.parameters()).device
    logits = model(batch.to(device))
    probs = (logits.sigmoid() if meta.get("multi_label") else logits.softmax(dim=1)).cpu()
    k = max(1, min(top_k, probs.shape[1]))
    values, indices = probs.topk(k, dim=1)
    label = (lambda i: names[i]) if names else str
    return [(path, [(label(int(i)), float(v)) for v, i in zip(vs, ix, strict=True)])
            for path, vs, ix in zip(paths, values, indices, strict=True)]
