"""The 1000 ImageNet class names, in the order of every ImageNet classifier's outputs.

Shipped as package data (``data/imagenet_classes.txt``), generated once from torchvision's list
(``torchvision.models._meta._IMAGENET_CATEGORIES``) so that ``predict`` needs no download.
Keras and timm order the classes the same way (by WordNet id).
"""

from __future__ import annotations

from functools import cache
from importlib import resources

NUM_CLASSES = 1000


@cache
def imagenet_class_names() -> tuple[str, ...]:
    text = resources.files(__package__).joinpath("imagenet_classes.txt").read_text("utf8")
    names = tuple(line for line in text.splitlines() if line)
    if len(names) != NUM_CLASSES:  # a broken install, not a user error
        raise RuntimeError(f"imagenet_classes.txt holds {len(names)} names, expected 1000")
    return names
