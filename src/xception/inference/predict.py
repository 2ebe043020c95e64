"""Top-k classes of image files, batch by batch: memory stays that of a few batches, whatever the
number of files; an unreadable file is reported and skipped (``predict_stream``) or fails the call
(``predict_files``). ``write_predictions`` streams the rows into a CSV or JSONL file, atomically."""

from __future__ import annotations

import contextlib
import csv
import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import torch
from torch import nn

from ..data.images import BadSample, ImageReadError
from ..files import atomic_write, printable
from .inputs import ImageFiles, NothingRead, batches, output_format
from .model import class_names_of, preprocess_of

Prediction = tuple[str, list[tuple[str, float]]]   # (path, [(class name, probability), ...])
FORMATS = (".csv", ".jsonl")


def predict_stream(model: nn.Module, meta: dict, paths: Sequence[str | Path], top_k: int = 5,
                   device: torch.device | None = None, batch_size: int = 64,
                   num_workers: int = 0) -> Iterator[Prediction | BadSample]:
    """Top-k (class name, probability) per image, in input order, as each batch is classified; an
    unreadable file comes as a ``BadSample`` (path, reason) instead. Probabilities are softmax
    (sigmoid for multi-label weights)."""
    pre = preprocess_of(meta)
    names = class_names_of(meta, model)
    paths = [str(p) for p in paths]
    device = device or next(model.parameters()).device
    for batch in batches(ImageFiles(paths, pre), batch_size, num_workers):
        yield from (BadSample(path, reason) for path, reason in batch.bad)
        if batch.x is None:
            continue
        with torch.inference_mode():  # not held across the yields below
            logits = model(batch.x.to(device)).float()
            probs = (logits.sigmoid() if meta.get("multi_label") else logits.softmax(dim=1)).cpu()
            values, indices = probs.topk(max(1, min(top_k, probs.shape[1])), dim=1)
        for pos, vs, ix in zip(batch.y.tolist(), values.tolist(), indices.tolist(), strict=True):
            yield paths[pos], [(names[i] if i < len(names) else str(i), v)
                               for v, i in zip(vs, ix, strict=True)]


def predict_files(model: nn.Module, meta: dict, paths: Sequence[str | Path], top_k: int = 5,
                  device: torch.device | None = None, batch_size: int = 64,
                  num_workers: int = 0) -> list[Prediction]:
    """Top-k (class name, probability) per image: ``predict_stream`` collected, batch by batch.
    One unreadable file fails the call (a ``DataError`` naming it); ``predict_stream`` skips it."""
    out: list[Prediction] = []
    with contextlib.closing(predict_stream(model, meta, paths, top_k, device, batch_size,
                                           num_workers)) as stream:
        for item in stream:
            if isinstance(item, BadSample):
                raise ImageReadError(item.path, item.reason)
            out.append(item)
    return out


def prediction_format(path: str | Path) -> str:
    """``.csv`` or ``.jsonl``, from the file name; anything else is refused before any work."""
    return output_format(path, FORMATS, "predictions are written as CSV or JSONL")


def write_predictions(path: str | Path,
                      predictions: Iterable[Prediction | BadSample]) -> tuple[Path, int]:
    """Write one row per prediction as they come (CSV: ``path, class_1, probability_1, ...``;
    JSONL: ``{"path": ..., "top": [{"class": ..., "probability": ...}, ...]}``), atomically;
    returns the path and the number of rows. ``BadSample`` items of a ``predict_stream`` are
    passed over (``inputs.skip_bad`` reports them). No rows at all: ``NothingRead``, nothing
    written."""
    fmt = prediction_format(path)
    rows = 0

    def write(tmp: str) -> None:
        nonlocal rows
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f) if fmt == ".csv" else None
            for item in predictions:
                if isinstance(item, BadSample):
                    continue
                name, top = printable(item[0]), item[1]  # a file name that is not UTF-8, escaped
                if writer is None:
                    f.write(json.dumps({"path": name, "top": [
                        {"class": c, "probability": float(f"{p:.6g}")} for c, p in top]}) + "\n")
                    rows += 1
                    continue
                if rows == 0:
                    writer.writerow(["path", *(f"{what}_{i}" for i in range(1, len(top) + 1)
                                               for what in ("class", "probability"))])
                writer.writerow([name, *(v for c, p in top for v in (c, f"{p:.6g}"))])
                rows += 1
        if rows == 0:
            raise NothingRead(f"none of the images could be read; {str(path)!r} not written")

    return atomic_write(path, write), rows
