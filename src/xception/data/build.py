"""Datasets: embedded digits, CIFAR-10/100, ImageFolder trees and multi-label manifests.

Every dataset comes out as images scaled to [-1, 1], as Keras' Xception preprocessing does.
``build_datasets(cfg)`` returns (train, val, info); ``resolve_data_arg`` turns ``--data X`` into
config values. The default dataset is scikit-learn's digits (1,797 8x8 handwritten digits that ship
inside scikit-learn), so the main job, the tests and the experiments run on real data offline.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from .builtin import (
    default_cache_dir,
    holdout_indices,
    load_cifar,
    load_digits_images,
    split_indices,
    to_unit_images,
)
from .classes import per_class, restrict
from .datasets import ImageDataset, TensorSource, class_frequencies
from .folders import (
    find_manifest,
    read_class_list,
    read_class_weights,
    read_manifest,
    scan_image_folder,
)
from .idx import CLASS_NAMES, load_idx_dataset
from .images import DigitsJitter, eval_transform, train_transform
from .preprocess import Preprocess
from .section import DataSection


@dataclass(frozen=True)
class DatasetInfo:
    num_classes: int
    class_names: tuple[str, ...]
    preprocess: Preprocess
    multi_label: bool = False
    class_weights: tuple[float, ...] | None = None  # per-class weights for MAP@100


NAMED = ("digits", "fashion-mnist", "mnist", "cifar10", "cifar100")  # need no data.root


def resolve_data_arg(text: str) -> dict[str, Any]:
    """``--data`` as config values: a dataset name, an ImageFolder root (``train/`` + ``val/``), a
    manifest folder (``train.jsonl``/``.csv`` + ``classes.txt``) or a manifest file."""
    if text in NAMED:
        return {"name": text}
    p = Path(text)
    if p.is_file() and p.suffix in (".jsonl", ".csv"):
        return {"name": "manifest", "root": str(p.parent), "train_split": p.stem}
    if p.is_dir():
        if any((p / f"train{ext}").is_file() for ext in (".jsonl", ".csv")):
            return {"name": "manifest", "root": str(p)}
        if (p / "train").is_dir():
            return {"name": "imagefolder", "root": str(p)}
        raise DataError(f"--data {text!r}: the folder holds neither train/ + val/ class folders "
                        "nor a train.jsonl / train.csv manifest")
    raise DataError(f"--data {text!r} is not {', '.join(NAMED)}, a folder or a .jsonl/.csv "
                    "manifest")


def _subset(ds: ImageDataset, n: int, seed: int) -> ImageDataset:
    if not n or n >= len(ds):
        return ds
    return ds.select(np.sort(np.random.default_rng(seed).permutation(len(ds))[:n]))


def _digits(cfg: DataSection) -> tuple[ImageDataset, ImageDataset, DatasetInfo]:
    images, labels = load_digits_images(cfg.image_size)
    train_idx, val_idx = split_indices(labels, cfg.val_fraction, cfg.split_seed)
    src = TensorSource(images, labels.tolist())
    train = ImageDataset(src, DigitsJitter() if cfg.augment else None, 10,
                         indices=train_idx)
    val = ImageDataset(src, None, 10, indices=val_idx)
    return train, val, DatasetInfo(10, tuple(str(i) for i in range(10)),
                                   Preprocess(cfg.image_size, 1))


def _cifar(cfg: DataSection) -> tuple[ImageDataset, ImageDataset, DatasetInfo]:
    root = Path(cfg.root).expanduser() if cfg.root else default_cache_dir()
    x_tr, y_tr, x_te, y_te, names = load_cifar(cfg.name, root, cfg.download)
    n = len(names)
    size = cfg.image_size
    aug = train_transform(size, 3, cfg.min_crop_scale, cfg.hflip) if cfg.augment else \
        eval_transform(size, 3)
    train = ImageDataset(TensorSource(x_tr, y_tr.tolist()), aug, n)
    val = ImageDataset(TensorSource(x_te, y_te.tolist()), eval_transform(size, 3), n)
    return train, val, DatasetInfo(n, names, Preprocess(size, 3, crop_fraction=1.0))


def _idx(cfg: DataSection) -> tuple[ImageDataset, ImageDataset, DatasetInfo]:
    """Fashion-MNIST / MNIST: 28x28 grayscale resized to ``image_size``, [-1, 1] like the digits;
    the official split, the 10,000 test images as validation; the digits' jitter (no flips)."""
    root = Path(cfg.root).expanduser() if cfg.root else None
    x_tr, y_tr, x_va, y_va = load_idx_dataset(cfg.name, root, cfg.download, default_cache_dir())
    size = cfg.image_size
    train = ImageDataset(TensorSource(to_unit_images(x_tr, size), y_tr.tolist()),
                         DigitsJitter() if cfg.augment else None, 10)
    val = ImageDataset(TensorSource(to_unit_images(x_va, size), y_va.tolist()), None, 10)
    return train, val, DatasetInfo(10, CLASS_NAMES[cfg.name], Preprocess(size, 1))


def _files(cfg: DataSection) -> tuple[ImageDataset, ImageDataset, DatasetInfo]:
    root = Path(cfg.root).expanduser()
    if not root.is_dir():
        raise DataError(f"data.root {cfg.root!r} is not a folder")
    multi = cfg.name == "manifest"
    if multi:
        classes = read_class_list(root / "classes.txt")
        train_src = read_manifest(find_manifest(root, cfg.train_split), classes)
        val_src = read_manifest(find_manifest(root, cfg.val_split), classes)
    else:
        train_src, classes = scan_image_folder(root, cfg.train_split)
        val_src, _ = scan_image_folder(root, cfg.val_split, classes)
    n, size = len(classes), cfg.image_size
    evaluation = eval_transform(size, 3, cfg.crop_fraction)
    aug = train_transform(size, 3, cfg.min_crop_scale, cfg.hflip) if cfg.augment else evaluation
    weights = None
    if multi:
        w = read_class_weights(cfg.class_weights, class_frequencies(train_src.targets, n))
        weights = None if w is None else tuple(float(v) for v in w)
    elif cfg.class_weights:
        raise DataError("data.class_weights applies to multi-label manifests only")
    info = DatasetInfo(n, tuple(classes), Preprocess(size, 3, crop_fraction=cfg.crop_fraction),
                       multi, weights)
    return (ImageDataset(train_src, aug, n, multi), ImageDataset(val_src, evaluation, n, multi),
            info)


@dataclass(frozen=True)
class Splits:
    """A run's images: training, validation (what a run is judged and tuned on) and, when the
    validation split is held out of the training images, the test split (reported once)."""

    train: ImageDataset
    val: ImageDataset
    info: DatasetInfo
    test: ImageDataset | None = None


HAS_TEST_SPLIT = ("fashion-mnist", "mnist", "cifar10", "cifar100")  # official train/test


def build_splits(cfg: DataSection, seed: int = 0) -> Splits:
    """The configured dataset's splits; ``seed`` seeds the training augmentation. With
    ``data.val_holdout`` the validation images come out of the training set (the evaluation
    transform, no augmentation) and the official test split becomes ``test``."""
    if cfg.name not in BUILDERS:
        raise DataError(f"unknown dataset {cfg.name!r}; available: {sorted(BUILDERS)}")
    if cfg.name not in NAMED and not cfg.root:
        raise DataError(f"data.name={cfg.name!r} needs data.root (or --data PATH)")
    if cfg.val_holdout and cfg.name not in HAS_TEST_SPLIT:
        raise DataError(f"data.val_holdout applies to {', '.join(HAS_TEST_SPLIT)} (a test split "
                        f"besides the training images); {cfg.name} has none")
    train, val, info = BUILDERS[cfg.name](cfg)
    if cfg.classes:  # part of the classes, relabelled (data/classes.py)
        train, val, info = restrict(train, val, info, cfg.classes)
    test = None
    if cfg.val_holdout:
        labels = np.asarray(train.targets())
        rest, held = holdout_indices(labels, cfg.val_holdout, cfg.split_seed)
        test, val = val, ImageDataset(train.source, val.transform, train.num_classes,
                                      train.multi_label, indices=train.indices[held])
        train = train.select(rest)
    if cfg.per_class:
        train = per_class(train, cfg.per_class, cfg.split_seed)
    train = _subset(train, cfg.train_subset, cfg.split_seed).with_seed(seed)
    val = _subset(val, cfg.val_subset, cfg.split_seed + 1)
    return Splits(train, val, info, test)


def build_datasets(cfg: DataSection, seed: int = 0) -> tuple[ImageDataset, ImageDataset, DatasetInfo]:
    """(train, val, info) for the configured dataset (``build_splits`` without the test split)."""
    splits = build_splits(cfg, seed)
    return splits.train, splits.val, splits.info


BUILDERS = {"digits": _digits, "fashion-mnist": _idx, "mnist": _idx, "cifar10": _cifar,
            "cifar100": _cifar, "imagefolder": _files, "manifest": _files}
