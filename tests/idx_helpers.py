"""Tiny idx files (the format of MNIST / Fashion-MNIST) that tests write themselves."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

import xception.data.idx as idx


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> Path:
    """An idx file of unsigned bytes: magic 0x0000 08 ndim, big-endian sizes, the bytes."""
    raw = struct.pack(">HBB", 0, 0x08, array.ndim) + b"".join(
        struct.pack(">I", n) for n in array.shape) + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(raw))
    else:
        path.write_bytes(raw)
    return path


def write_set(folder: Path, n_train: int = 12, n_val: int = 6, compress: bool = True) -> dict:
    rng = np.random.default_rng(0)
    data = {}
    for split, n in (("train", n_train), ("val", n_val)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = np.arange(n) % 10
        images, labels = idx.FILES[split]
        write_idx(folder / images, x, compress)
        write_idx(folder / labels, y, compress)
        data[split] = (x, y)
    return data
