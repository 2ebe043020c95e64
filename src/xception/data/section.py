"""The ``data`` section of a run config: which images, how they are split, augmented, loaded.

It lives with the data (as a model's config lives with the models) and checks its own values
when it is made, so a ``DataSection`` built directly for ``build_datasets`` is held to the same
rules as a run's. ``xception.config`` lists it beside the run's other sections.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import Range, check_fields

# every data.name; build.BUILDERS has one builder for each (a test holds them together)
DATASETS = ("digits", "fashion-mnist", "mnist", "cifar10", "cifar100", "imagefolder", "manifest")

RANGES: dict[str, Range] = {
    "data.image_size": (lambda v: v >= 8, ">= 8"),
    "data.val_fraction": (lambda v: 0 < v < 1, "in (0, 1)"),
    "data.val_holdout": (lambda v: v >= 0, ">= 0 (images; 0: the test split validates)"),
    "data.train_subset": (lambda v: v >= 0, ">= 0"),
    "data.val_subset": (lambda v: v >= 0, ">= 0"),
    "data.per_class": (lambda v: v >= 0, ">= 0"),
    "data.min_crop_scale": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "data.crop_fraction": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "data.num_workers": (lambda v: v >= 0, ">= 0"),
    "data.prefetch_factor": (lambda v: v >= 1, ">= 1"),
    "data.max_bad_fraction": (lambda v: 0 <= v <= 1, "in [0, 1]"),
}


@dataclass(frozen=True)
class DataSection:
    """Which images, how they are split, augmented and loaded (``data.build_datasets``)."""

    name: str = "digits"          # digits | fashion-mnist | mnist | cifar10 | cifar100 | imagefolder
    #                               | manifest
    root: str = ""                # folder of the data (imagefolder/manifest); others: where to look
    download: bool = False        # CIFAR, (Fashion-)MNIST: fetch it into root if it is not there
    train_split: str = "train"    # imagefolder: sub-folder; manifest: file stem (train.csv/.jsonl)
    val_split: str = "val"
    image_size: int = 32          # digits are 8x8; upsampled so the 32 px model sees them
    val_fraction: float = 0.2     # digits: held out with a fixed, stratified, seeded split
    val_holdout: int = 0          # sets with a test split (MNIST, Fashion-MNIST, CIFAR): >0 holds
    #                               out this many training images (stratified, split_seed) as the
    #                               validation split; the test split is then evaluated once, at
    #                               the end (what budgets and recipes are chosen on is not it)
    split_seed: int = 0
    train_subset: int = 0         # >0: keep only this many training images (budgets, tests)
    val_subset: int = 0           # >0: keep only this many validation images
    classes: str = ""             # keep these classes (names or indices, comma-separated),
    #                               relabelled 0..k-1 in that order (data/classes.py)
    per_class: int = 0            # >0: keep this many training images of each class
    augment: bool = True          # digits: small affine jitter; images: random-resized crop + flip
    min_crop_scale: float = 0.08  # random-resized crop keeps 8%-100% of the area (Inception)
    hflip: bool = True            # random horizontal flips (not for digits)
    crop_fraction: float = 0.875  # eval: resize to size/0.875, centre-crop size (files only)
    class_weights: str = ""       # multi-label MAP@100: "", "frequency" or a file of weights
    num_workers: int = 0          # loader processes; the in-memory datasets need none
    prefetch_factor: int = 2      # batches each worker prepares ahead
    max_bad_fraction: float = 0.01  # abort when more of the images than this are unreadable

    def __post_init__(self) -> None:
        check_fields(self, "data", {"data.name": DATASETS}, RANGES)
