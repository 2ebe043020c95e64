"""BatchNorm over the global batch under torchrun (``train.sync_bn``).

Why: with small per-process batches (fine-tuning at high resolution: DeepLab's lesson, a few
images per GPU) each process's BatchNorm normalises with the statistics of its own few images,
which are noisy and unlike those of the global batch the recipe was tuned for. Synchronised,
every process normalises with the mean and variance of all processes' images: the step is the
one a single process would take with the whole batch (tested with 2 gloo processes).

``torch.nn.SyncBatchNorm`` runs only on GPUs (its kernels and its input check); this layer does
the same arithmetic with two autograd-aware all-reduces per layer (the sums, then the squared
deviations from the global mean: the two-pass variance, as exact as one process's), on any
device and backend. It is a subclass of ``nn.BatchNorm2d`` put in place by changing the layers'
class (as ``freezing.py`` does), so parameters, state-dict keys, checkpoints, EMA copies and the
saved weights are those of the plain model. Only training-mode forward passes synchronise; in
eval mode (and in a single process) it is ``nn.BatchNorm2d``. Every process runs the same
number of training-mode passes (steps and BatchNorm recalibration alike), so the collectives
always pair up.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.nn.functional import all_reduce

_DIMS = (0, 2, 3)


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` whose training-mode statistics are over every process's batch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or _world() == 1:
            return super().forward(x)
        xf = x.float()
        channels = (1, -1, 1, 1)
        local = torch.cat([xf.sum(_DIMS), xf.new_tensor([x.numel() // x.shape[1]])])
        sums = all_reduce(local)
        n = sums[-1]
        mean = sums[:-1] / n
        centered = xf - mean.view(channels)
        var = all_reduce(centered.square().sum(_DIMS)) / n
        y = centered * torch.rsqrt(var + self.eps).view(channels)
        if self.affine:
            y = y * self.weight.view(channels) + self.bias.view(channels)
        if self.track_running_stats:
            self._update_running(mean.detach(), var.detach(), n.detach())
        return y.to(x.dtype)

    @torch.no_grad()
    def _update_running(self, mean: torch.Tensor, var: torch.Tensor, n: torch.Tensor) -> None:
        """As ``nn.BatchNorm2d`` does: the unbiased variance, momentum (None: cumulative)."""
        self.num_batches_tracked += 1
        factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
        unbiased = var * (n / (n - 1).clamp(min=1))  # no host sync: n stays a tensor
        self.running_var.lerp_(unbiased.to(self.running_var.dtype), factor)


def synchronise_batch_norm(model: nn.Module) -> int:
    """Make every ``nn.BatchNorm2d`` of ``model`` a ``GlobalBatchNorm2d`` in place; returns how
    many. Done before freezing, so a frozen layer's class (``freezing.py``) derives from it and
    is synchronised again once unfrozen."""
    layers = [m for m in model.modules() if type(m) is nn.BatchNorm2d]
    for layer in layers:
        layer.__class__ = GlobalBatchNorm2d
    return len(layers)
