"""Reading image files safely, and the train/eval transforms (torchvision transforms v2).

``decode_image`` is the one place an image file is read, for training, evaluation and ``predict``
alike. It refuses anything that is not a regular file (after following links: a FIFO, a device,
a socket, a folder) before reading a byte, so a named pipe cannot hang a run; decodes inside the
``try`` (truncation shows at decode time, not at open); keeps Pillow's pixel limit and counts its
"possible decompression bomb" warning as an error too; and scales 16-bit and 32-bit integer
grayscale images to 8 bits (Pillow's own conversion clips them at 255). A bad file never raises
inside the data loader: ``read_image`` returns it as a ``BadSample`` that the loader counts and
the run reports; ``predict`` gets the ``DataError``.

torchvision is imported inside the transform builders: it is slow to import (and imports
triton; benchmarks/RESULTS.md, "Figures moved out of code comments"), and reading images or
building the data package should not pay for it.
"""

from __future__ import annotations

import math
import os
import random
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from ..errors import DataError

if TYPE_CHECKING:
    from torchvision.transforms import v2


@dataclass(frozen=True)
class BadSample:
    """An image that could not be read: where and why (kept short for the log)."""

    path: str
    reason: str


class ImageReadError(DataError):
    """An image file that cannot be read: ``path`` and a short ``reason`` (for the loader's log)."""

    def __init__(self, path: str, reason: str, missing: bool = False) -> None:
        self.path, self.reason = path, reason
        super().__init__(f"image {path!r} does not exist" if missing
                         else f"cannot read image {path!r}: {reason}")


def _file_kind(mode: int) -> str:
    kinds = [(stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
             (stat.S_ISSOCK, "a socket")]
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def _not_regular(path: str, mode: int) -> ImageReadError:
    return ImageReadError(path, f"it is {_file_kind(mode)}, not a regular file; give the path of "
                                "an image file (reading it could block forever or never end)")


def _open_regular(path: str) -> int:
    """A read-only descriptor of ``path``, refused (before and after opening) unless it is a regular
    file. Opened non-blocking, so a FIFO swapped in between the two checks cannot hang the open."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ImageReadError(path, "does not exist (or is a link to nothing)", missing=True) from None
    except (OSError, ValueError) as e:  # ELOOP (a link to itself), EACCES, NUL in the name
        raise ImageReadError(path, f"{type(e).__name__}: {e}") from None
    if not stat.S_ISREG(st.st_mode):
        raise _not_regular(path, st.st_mode)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        raise ImageReadError(path, f"{type(e).__name__}: {e}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise _not_regular(path, mode)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


# Pillow's modes for 16-bit grayscale (PNG, TIFF, PGM) and 32-bit integer grayscale
WIDE_INTEGER_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})


def to_8_bit(im: Image.Image) -> Image.Image:
    """A 16-bit or 32-bit integer grayscale image as 8-bit "L": value * 255 / 65535, rounded
    (values outside 0..65535 are clipped first); any other image unchanged. Pillow's own conversion
    clips at 255 instead, which turns a 16-bit photo almost white."""
    if im.mode not in WIDE_INTEGER_MODES:
        return im
    v = np.clip(np.asarray(im).astype(np.int64), 0, 65535)
    return Image.fromarray(((v + 128) // 257).astype(np.uint8))  # == round(v / 257), no ties


def decode_image(path: str | Path, mode: str = "RGB") -> Image.Image:
    """Decode ``path`` fully into a ``mode`` image; ``ImageReadError`` (a ``DataError``) says why
    it cannot. The one reader of image files: training, evaluation and predict all come here."""
    where = str(path)
    with open(where, "rb", opener=lambda name, _flags: _open_regular(name)) as f:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(f) as im:
                    im.load()
                    return to_8_bit(im).convert(mode)
        except UnidentifiedImageError:
            raise ImageReadError(where, "UnidentifiedImageError: not an image (or a format Pillow "
                                        "does not read)") from None
        except Exception as e:  # Pillow's decoders raise many types (OSError, SyntaxError, ...)
            raise ImageReadError(where, f"{type(e).__name__}: {e}") from None


def read_image(path: str, mode: str = "RGB") -> Image.Image | BadSample:
    """Decode ``path`` fully into a ``mode`` image, or say why it cannot be read (never raises)."""
    try:
        return decode_image(path, mode)
    except ImageReadError as e:
        return BadSample(path, e.reason[:200])
    except Exception as e:  # the loader must not die on a file
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


class DigitsJitter:
    """Small random rotations (+-10 degrees), shifts (+-10%) and zooms (0.9-1.1) of digit images,
    bilinear, the background (-1) filling the border. No flips: a mirrored digit is another symbol.

    Written with ``F.affine_grid``/``F.grid_sample`` over a whole batch at once (``batch``) instead
    of torchvision's per-image ``RandomAffine``: much cheaper per epoch, and the embedded-digits
    run never imports torchvision, which would lengthen its start-up (as measured:
    benchmarks/RESULTS.md, "Figures moved out of code comments"). Each image's jitter is a pure
    function of its sample seed (``sample_seed``), so a resumed run, any batch split and any
    worker count see the same images.
    """

    def __init__(self, degrees: float = 10.0, translate: float = 0.1,
                 scale: tuple[float, float] = (0.9, 1.1), fill: float = -1.0) -> None:
        self.degrees, self.translate, self.scale, self.fill = degrees, translate, scale, fill

    def theta(self, seed: int) -> list[list[float]]:
        """The 2x3 ``affine_grid`` matrix of one sample: output pixel -> input pixel, i.e. the
        inverse of rotate-zoom-shift, in grid units (the image spans [-1, 1])."""
        rng = random.Random(seed)
        angle = math.radians(rng.uniform(-self.degrees, self.degrees))
        zoom = rng.uniform(*self.scale)
        tx, ty = (rng.uniform(-2 * self.translate, 2 * self.translate) for _ in range(2))
        cos, sin = math.cos(angle) / zoom, math.sin(angle) / zoom
        return [[cos, sin, -(cos * tx + sin * ty)], [-sin, cos, sin * tx - cos * ty]]

    def batch(self, images: torch.Tensor, seeds: list[int]) -> torch.Tensor:
        """Jitter (N, C, H, W) images, image i with ``seeds[i]``."""
        theta = torch.tensor([self.theta(s) for s in seeds], dtype=images.dtype)
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        out = F.grid_sample(images - self.fill, grid, mode="bilinear", padding_mode="zeros",
                            align_corners=False)
        return out + self.fill

    def __repr__(self) -> str:
        return (f"DigitsJitter(degrees={self.degrees}, translate={self.translate}, "
                f"scale={self.scale}, fill={self.fill})")


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of one sample's augmentation: a pure function of (run seed, epoch, sample), so a
    resumed run, any number of workers and any number of processes see the same crops."""
    return ((seed * 1_000_003 + epoch) * 2_654_435_761 + index) % (2**63 - 1)
