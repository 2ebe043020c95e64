"""Datasets and image preprocessing.

The default dataset is scikit-learn's digits (1,797 8x8 handwritten digits that ship inside
scikit-learn), so the main job, the tests and the experiments run on real data with no network.
Every dataset comes out as images scaled to [-1, 1], as Keras' Xception preprocessing does.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision.transforms import v2

from .config import DataSection
from .errors import DataError


@dataclass(frozen=True)
class Preprocess:
    """How a raw image becomes a model input; saved with the weights so ``predict`` repeats it."""

    image_size: int
    in_chans: int
    # pixels in [0, max] -> [-1, 1]; this is Keras' `preprocess_input` for Xception
    mode: str = "minus_one_one"

    def to_dict(self) -> dict:
        return asdict(self)


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


def load_image(path: str | Path, pre: Preprocess) -> torch.Tensor:
    """Read one image file into a (C, S, S) tensor the way the model was trained.

    Decoding happens inside the ``try``: truncated files fail at decode time, not at open.
    """
    try:
        with Image.open(path) as im:
            im = im.convert("L" if pre.in_chans == 1 else "RGB")
            im.load()
    except FileNotFoundError:
        raise DataError(f"image {str(path)!r} does not exist") from None
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"cannot read image {str(path)!r}: {e}") from None
    x = v2.functional.pil_to_tensor(im).float().unsqueeze(0) / 255.0
    x = F.interpolate(x, size=(pre.image_size, pre.image_size), mode="bilinear",
                      align_corners=False, antialias=True)
    return (x[0] * 2 - 1).clamp_(-1, 1)
