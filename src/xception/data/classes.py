"""Part of a data set's classes, and a few images of each: what transfer learning needs
("pretrain on five classes, learn the other five from 10 images per class").

``data.classes`` keeps the named classes (names or indices, comma-separated, in the order
given: that order is the new label order) and relabels them 0..k-1; ``data.per_class`` keeps
that many training images of each class (stratified, drawn with ``data.split_seed``).
"""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np

from ..errors import DataError
from .datasets import ImageDataset


def parse_classes(spec: str, names: tuple[str, ...]) -> list[int]:
    """``"0,1,4"`` or ``"Trouser,Bag"`` -> the class indices, checked against ``names``."""
    chosen: list[int] = []
    for token in (t.strip() for t in spec.split(",")):
        if not token:
            continue
        if token in names:
            index = names.index(token)
        elif token.isdigit() and int(token) < len(names):
            index = int(token)
        else:
            raise DataError(f"data.classes: {token!r} is neither a class name nor an index below "
                            f"{len(names)}; the classes are {', '.join(names)}")
        if index in chosen:
            raise DataError(f"data.classes names {names[index]!r} twice")
        chosen.append(index)
    if len(chosen) < 2:
        raise DataError(f"data.classes={spec!r} keeps {len(chosen)} class(es); a classifier "
                        "needs at least 2")
    return chosen


def keep_classes(dataset: ImageDataset, chosen: list[int]) -> ImageDataset:
    """The images of the ``chosen`` classes, relabelled 0..k-1 in that order (a new source
    object sharing the images: nothing is copied)."""
    if dataset.multi_label:
        raise DataError("data.classes applies to single-label data")
    relabel = {old: new for new, old in enumerate(chosen)}
    source = copy.copy(dataset.source)
    source.targets = [relabel.get(t, -1) for t in dataset.source.targets]
    kept = np.asarray([i for i in dataset.indices if source.targets[i] >= 0], dtype=np.int64)
    return ImageDataset(source, dataset.transform, len(chosen), False, dataset.seed, kept)


def per_class(dataset: ImageDataset, count: int, seed: int) -> ImageDataset:
    """``count`` images of each class, drawn with ``seed`` (a class with fewer: an error)."""
    labels = np.asarray(dataset.targets())
    rng = np.random.default_rng(seed)
    rows = []
    for label in range(dataset.num_classes):
        where = np.flatnonzero(labels == label)
        if len(where) < count:
            raise DataError(f"data.per_class={count}: class {label} has only {len(where)} "
                            "training images")
        rows.append(rng.choice(where, count, replace=False))
    return dataset.select(np.sort(np.concatenate(rows)))


def restrict(train: ImageDataset, val: ImageDataset, info, spec: str):
    """(train, val, info) with only the classes ``spec`` names."""
    chosen = parse_classes(spec, info.class_names)
    names = tuple(info.class_names[i] for i in chosen)
    weights = None if info.class_weights is None else tuple(info.class_weights[i] for i in chosen)
    return (keep_classes(train, chosen), keep_classes(val, chosen),
            replace(info, num_classes=len(chosen), class_names=names, class_weights=weights))
