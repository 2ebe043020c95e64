"""BatchNorm statistics recomputed from training batches before an evaluation ("precise BN").

Why: Xception's BatchNorm keeps Keras' momentum (0.99, i.e. PyTorch's 0.01), so its running
statistics average over ~100 steps. In a short run they still describe the initial weights when
the model is evaluated: in a run of a hundred-odd steps on a few hundred digits, every image
can go to one class for the first epochs while the training loss falls
(``tests/training/test_bn_stats.py`` trains such a run). An evaluation then measures that lag, not
what the weights learned. With ``train.bn_recalibration=K`` the running statistics are replaced,
before every evaluation, by the exact average over K fixed training batches of the current
weights (``torch.optim.swa_utils.update_bn``: reset, cumulative average, momentum restored).

Training itself never reads the running statistics (it normalises with batch statistics), so
the recalibration changes what is evaluated and saved, not the training trajectory; it draws no
random numbers, so resumed runs stay bit-exact.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.optim.swa_utils import update_bn
from torch.utils.data import DataLoader, Dataset, Sampler

from ..data import make_loader
from ..evaluation import autocast
from .freezing import is_inference_bn


class FixedBatches(Sampler[list]):
    """The same ``batches`` x ``batch`` training images at every evaluation (a permutation seeded
    by the run's seed, never the global RNG), keyed by the current epoch for the augmentation."""

    def __init__(self, n: int, batch: int, batches: int, seed: int) -> None:
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 7919)).tolist()
        take = min(n, batch * batches)
        self.rows = [perm[i:i + batch] for i in range(0, take, batch)]
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[list]:
        for rows in self.rows:
            yield [(self.epoch, i) for i in rows]

    def __len__(self) -> int:
        return len(self.rows)


def recalibration_loader(train_ds: Dataset, batch: int, batches: int, seed: int) -> DataLoader:
    """``batches`` batches of ``batch`` training images (per process: BatchNorm's batch size)."""
    return make_loader(train_ds, batch, batch_sampler=FixedBatches(len(train_ds), batch,
                                                                   batches, seed))


@torch.no_grad()
def recalibrate(model: nn.Module, loader: DataLoader, epoch: int, device: torch.device,
                memory_format: torch.memory_format = torch.contiguous_format,
                dtype: torch.dtype | None = None) -> int:
    """Replace every BatchNorm's running statistics by their average over ``loader``'s batches
    under the current weights; returns the number of images used."""
    loader.batch_sampler.set_epoch(epoch)
    seen = 0

    def images() -> Iterator[torch.Tensor]:
        nonlocal seen
        for b in loader:
            if b.x is not None:
                seen += len(b.x)
                yield b.x.to(device, non_blocking=True, memory_format=memory_format)

    with autocast(device, dtype):
        if any(is_inference_bn(m) for m in model.modules()):
            _update_trainable_bn(images(), model)
        else:
            update_bn(images(), model)
    return seen


def _update_trainable_bn(images: Iterator[torch.Tensor], model: nn.Module) -> None:
    """``update_bn`` for the BatchNorm layers not held in inference mode (``train.freeze_bn``,
    frozen stages): theirs are the pretrained statistics and stay as they are; ``update_bn``
    would reset every BatchNorm layer."""
    layers = [m for m in model.modules() if isinstance(m, _BatchNorm) and not is_inference_bn(m)]
    if not layers:  # every BatchNorm layer keeps its statistics: nothing to recompute
        return
    momenta = {m: m.momentum for m in layers}
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches
    was_training = model.training
    model.train()
    for x in images:
        model(x)
    for m in layers:
        m.momentum = momenta[m]
    model.train(was_training)
