"""Datasets and image preprocessing.

The default dataset is scikit-learn's digits (1,797 8x8 handwritten digits that ship inside
scikit-learn), so the main job, the tests and the experiments run on real data with no network.
Every dataset comes out as images scaled to [-1, 1], as Keras' Xception preprocessing does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from torchvision.transforms import v2

from .config import DataSection
from .errors import DataError
from .preprocess import Preprocess


@dataclass(frozen=True)
class DatasetInfo:
    num_classes: int
    class_names: tuple[str, ...]
    preprocess: Preprocess


class TensorImages(Dataset):
    """In-memory images (N, C, H, W) in [-1, 1] with labels and an optional per-sample transform."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor,
                 transform: v2.Transform | None = None) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.images[i]
        if self.transform is not None:
            x = self.transform(x)
        return x, self.labels[i]


def train_augmentation() -> v2.Transform:
    """Small rotations, shifts and zooms; the background (-1 after scaling) fills the border."""
    return v2.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1), fill=-1.0)


def split_indices(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, ...]:
    """A stratified split that depends only on the labels and the seed (stable across machines)."""
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"data.val_fraction must be in (0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_val = max(1, round(len(idx) * val_fraction))
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def load_digits_images(image_size: int) -> tuple[torch.Tensor, np.ndarray]:
    """All digits as (N, 1, S, S) float images in [-1, 1] and their labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    if image_size != x.shape[-1]:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    return (x * 2 - 1).clamp_(-1, 1), digits.target


def build_datasets(cfg: DataSection) -> tuple[Dataset, Dataset, DatasetInfo]:
    """(train, val, info) for the configured dataset."""
    if cfg.name != "digits":
        raise DataError(f"unknown dataset {cfg.name!r}; available: 'digits'")
    if cfg.image_size < 8:
        raise DataError(f"data.image_size must be >= 8 for digits, got {cfg.image_size}")
    images, labels = load_digits_images(cfg.image_size)
    train_idx, val_idx = split_indices(labels, cfg.val_fraction, cfg.split_seed)
    if cfg.train_subset:
        if cfg.train_subset < 0:
            raise DataError(f"data.train_subset must be >= 0, got {cfg.train_subset}")
        train_idx = train_idx[np.random.default_rng(cfg.split_seed).permutation(
            len(train_idx))[:cfg.train_subset]]
    y = torch.as_tensor(labels)
    aug = train_augmentation() if cfg.augment else None
    train = TensorImages(images[train_idx], y[train_idx], aug)
    val = TensorImages(images[val_idx], y[val_idx])
    info = DatasetInfo(10, tuple(str(i) for i in range(10)), Preprocess(cfg.image_size, 1))
    return train, val, info
