"""How a raw image file becomes a model input; the description is saved with the weights.

``predict`` reads it back from the weights' metadata, so an image is always prepared the way the
model was trained (or the way Keras prepared it, for imported Keras weights).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import DataError
from .images import decode_image, eval_transform


@dataclass(frozen=True)
class Preprocess:
    """How a raw image becomes a model input; saved with the weights so ``predict`` repeats it."""

    image_size: int
    in_chans: int
    # pixels in [0, max] -> [-1, 1]; this is Keras' `preprocess_input` for Xception
    mode: str = "minus_one_one"
    # "bilinear" / "bicubic": antialiased resize ("bicubic" is what timm's ImageNet models were
    # evaluated with). "keras": PIL nearest-neighbour resize, as
    # `keras.utils.load_img(path, target_size=...)` does, so imported Keras weights see exactly
    # the inputs the Keras documentation's example feeds them.
    interpolation: str = "bilinear"
    # None: resize the whole image to image_size x image_size (digits, Keras). A number: the
    # validation transform of image-file datasets -- short side to image_size / crop_fraction,
    # then the centre image_size x image_size -- so predict sees what evaluation saw.
    crop_fraction: float | None = None

    def __post_init__(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise DataError(f"unknown interpolation {self.interpolation!r}; "
                            f"known: {INTERPOLATIONS}")
        if self.crop_fraction is not None and not 0 < self.crop_fraction <= 1:
            raise DataError(f"crop_fraction must be in (0, 1], got {self.crop_fraction}")
        if self.crop_fraction is not None and self.interpolation == "keras":
            raise DataError("crop_fraction does not apply to the 'keras' interpolation "
                            "(Keras resizes the whole image)")

    def to_dict(self) -> dict:
        return asdict(self)


INTERPOLATIONS = ("bilinear", "bicubic", "keras")


def keras_imagenet(in_chans: int = 3) -> Preprocess:
    """What Keras does for Xception: 299x299 RGB, nearest resize, pixels / 127.5 - 1."""
    return Preprocess(image_size=299, in_chans=in_chans, interpolation="keras")


def load_image(path: str | Path, pre: Preprocess) -> torch.Tensor:
    """Read one image file into a (C, S, S) tensor the way the model was trained.

    The file is read by ``decode_image``, as training and evaluation read it: a path that is not a
    regular file, an unreadable image or a decompression bomb is a ``DataError``; 16-bit images are
    scaled to 8 bits."""
    im = decode_image(path, "L" if pre.in_chans == 1 else "RGB")
    if pre.interpolation == "keras":
        im = im.resize((pre.image_size, pre.image_size), Image.Resampling.NEAREST)
    if pre.crop_fraction is not None:
        return eval_transform(pre.image_size, pre.in_chans, pre.crop_fraction,
                              pre.interpolation)(im)
    # lazy: torchvision is slow to import, and imports triton (benchmarks/RESULTS.md, "Figures
    # moved out of code comments")
    from torchvision.transforms.v2.functional import pil_to_tensor

    x = pil_to_tensor(im).float().unsqueeze(0)
    if pre.interpolation == "keras":
        return x[0] / 127.5 - 1  # Keras' preprocess_input, to the last bit
    x = F.interpolate(x / 255.0, size=(pre.image_size, pre.image_size), mode=pre.interpolation,
                      align_corners=False, antialias=True)
    return (x[0] * 2 - 1).clamp_(-1, 1)
