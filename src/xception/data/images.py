"""Reading image files safely, and the train/eval transforms (torchvision transforms v2).

A bad file (empty, truncated, not an image, or a decompression bomb) never raises inside the data
loader: it comes back as a ``BadSample`` that the loader counts and the run reports. Decoding happens
inside the ``try`` (truncation shows at decode time, not at open), Pillow's pixel limit is kept, and
its "possible decompression bomb" warning counts as an error too.

torchvision is imported inside the transform builders: it takes about a second to import (and
imports triton), and reading images or building the data package should not pay for it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from PIL import Image

if TYPE_CHECKING:
    from torchvision.transforms import v2


@dataclass(frozen=True)
class BadSample:
    """An image that could not be read: where and why (kept short for the log)."""

    path: str
    reason: str


def read_image(path: str, mode: str = "RGB") -> Image.Image | BadSample:
    """Decode ``path`` fully into a ``mode`` image, or say why it cannot be read."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.load()
                return im.convert(mode)
    except Exception as e:  # Pillow's decoders raise many types (OSError, SyntaxError, ...) on junk
        return BadSample(path, f"{type(e).__name__}: {e}"[:200])


def to_unit_range(channels: int) -> v2.Transform:
    """uint8 [0, 255] -> float [-1, 1], as Keras' ``preprocess_input`` for Xception does."""
    from torchvision.transforms import v2

    return v2.Compose([v2.ToDtype(torch.float32, scale=True),
                       v2.Normalize([0.5] * channels, [0.5] * channels)])


def train_transform(size: int, channels: int, min_scale: float, hflip: bool) -> v2.Transform:
    """Inception-style: random-resized crop (min_scale..100% of the area) + horizontal flip."""
    from torchvision.transforms import v2

    steps: list[v2.Transform] = [v2.ToImage(),
                                 v2.RandomResizedCrop(size, scale=(min_scale, 1.0), antialias=True)]
    if hflip:
        steps.append(v2.RandomHorizontalFlip())
    return v2.Compose([*steps, to_unit_range(channels)])


def eval_transform(size: int, channels: int, crop_fraction: float = 1.0,
                   interpolation: str = "bilinear") -> v2.Transform:
    """Resize the short side to ``size / crop_fraction``, then centre-crop ``size`` x ``size``.

    On a PIL image the resize runs in PIL (as timm's and torchvision's reference transforms do)."""
    from torchvision.transforms import v2

    mode = v2.InterpolationMode(interpolation)
    return v2.Compose([v2.Resize(round(size / crop_fraction), interpolation=mode, antialias=True),
                       v2.CenterCrop(size), v2.ToImage(), to_unit_range(channels)])


def digits_augmentation() -> v2.Transform:
    """Small rotations, shifts and zooms; the background (-1 after scaling) fills the border.
    No flips: a mirrored digit is another symbol."""
    from torchvision.transforms import v2

    return v2.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1), fill=-1.0)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of one sample's augmentation: a pure function of (run seed, epoch, sample), so a
    resumed run, any number of workers and any number of processes see the same crops."""
    return ((seed * 1_000_003 + epoch) * 2_654_435_761 + index) % (2**63 - 1)
