"""Datasets whose items are keyed by ``index`` or ``(epoch, index)``.

The key carries the epoch so each sample's augmentation is seeded from (seed, epoch, index) inside
the dataset, in whichever worker process loads it: no state has to reach persistent workers, and
a resumed run reproduces every crop. Unreadable files come back as ``BadSample``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import Dataset

if TYPE_CHECKING:  # annotations only: the transforms are built (and torchvision imported) elsewhere
    from torchvision.transforms import v2

from .images import BadSample, read_image, sample_seed

Target = int | tuple[int, ...]   # a class index, or the class indices of a multi-label image


class TensorSource:
    """Images already in memory: (N, C, H, W) float or uint8, with their targets."""

    def __init__(self, images: torch.Tensor, targets: Sequence[Target]) -> None:
        self.images, self.targets = images, list(targets)

    def __len__(self) -> int:
        return len(self.targets)

    def load(self, i: int) -> tuple[Any, Target] | BadSample:
        return self.images[i], self.targets[i]


class FileSource:
    """Image files decoded on demand (in the loader's workers)."""

    def __init__(self, paths: Sequence[str], targets: Sequence[Target], mode: str = "RGB") -> None:
        self.paths, self.targets, self.mode = list(paths), list(targets), mode

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, i: int) -> tuple[Any, Target] | BadSample:
        image = read_image(self.paths[i], self.mode)
        return image if isinstance(image, BadSample) else (image, self.targets[i])


class ImageDataset(Dataset):
    """A source, optionally restricted to ``indices``, with a per-sample seeded transform."""

    def __init__(self, source: TensorSource | FileSource, transform: v2.Transform | None,
                 num_classes: int, multi_label: bool = False, seed: int = 0,
                 indices: np.ndarray | None = None) -> None:
        self.source, self.transform, self.seed = source, transform, seed
        self.num_classes, self.multi_label = num_classes, multi_label
        self.indices = np.arange(len(source)) if indices is None else np.asarray(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def targets(self) -> list[Target]:
        return [self.source.targets[i] for i in self.indices]

    def select(self, indices: np.ndarray) -> ImageDataset:
        """The items at ``indices`` (positions in this dataset), same source and transform."""
        return ImageDataset(self.source, self.transform, self.num_classes, self.multi_label,
                            self.seed, self.indices[np.asarray(indices, dtype=np.int64)])

    def with_seed(self, seed: int) -> ImageDataset:
        return ImageDataset(self.source, self.transform, self.num_classes, self.multi_label, seed,
                            self.indices)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, Target] | BadSample:
        epoch, i = key if isinstance(key, tuple) else (0, key)
        j = int(self.indices[i])
        item = self.source.load(j)
        if isinstance(item, BadSample):
            return item
        image, target = item
        if hasattr(self.transform, "batch"):  # seeded by its argument, not the global generator
            return self.transform.batch(image[None], [sample_seed(self.seed, epoch, j)])[0], target
        if self.transform is not None:
            # transforms draw from the default CPU generator: seed it for this sample, then put
            # it back (the generator's own calls; torch.manual_seed also seeds every device,
            # which is much slower: benchmarks/RESULTS.md, "Figures moved out of code comments")
            gen = torch.default_generator
            saved = gen.get_state()
            gen.manual_seed(sample_seed(self.seed, epoch, j))
            try:
                image = self.transform(image)
            finally:
                gen.set_state(saved)
        return image, target


    def __getitems__(self, keys: list) -> list:
        """A batch of items (what ``DataLoader`` asks for): in-memory images with a batched
        transform are transformed in one call, equal to ``[self[k] for k in keys]``."""
        if not (hasattr(self.transform, "batch") and isinstance(self.source, TensorSource)):
            return [self[k] for k in keys]
        pairs = [k if isinstance(k, tuple) else (0, k) for k in keys]
        rows = [int(self.indices[i]) for _, i in pairs]
        images = self.source.images[torch.as_tensor(rows, dtype=torch.long)]
        seeds = [sample_seed(self.seed, epoch, j) for (epoch, _), j in zip(pairs, rows, strict=True)]
        out = self.transform.batch(images, seeds)
        return [(out[n], self.source.targets[j]) for n, j in enumerate(rows)]


def class_frequencies(targets: Sequence[Target], num_classes: int) -> np.ndarray:
    """How many images carry each class."""
    counts = np.zeros(num_classes, dtype=np.int64)
    for t in targets:
        if isinstance(t, tuple):
            counts[list(t)] += 1
        else:
            counts[t] += 1
    return counts
