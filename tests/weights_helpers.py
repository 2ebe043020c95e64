"""Shared by the weights and fast-path tests: random weights whose activations stay O(1) throughout.

With naive random weights (or BN statistics far from the real ones) a deep net's logits saturate or
vanish and stop depending on details such as padding; parity tests built on them cannot fail. Here
conv/linear weights are scaled by 1/sqrt(fan_in), BN affine parameters are random, and the BN moving
statistics are the real batch statistics of random images (then jittered), so every layer sees
normalised inputs. The BN ending each residual branch of our Xception gets a small scale, as in
trained nets, so float rounding is not amplified block after block.
"""

from __future__ import annotations

import torch
from torch import nn

from xception.models.xception import XceptionBlock


@torch.no_grad()
def randomize_(model: nn.Module, size: int = 72, seed: int = 0, in_chans: int = 3) -> nn.Module:
    """Random, well-scaled weights and calibrated BN statistics; returns ``model`` in eval mode."""
    gen = torch.Generator().manual_seed(seed)

    def normal(t: torch.Tensor, std: float) -> None:
        t.copy_(torch.randn(t.shape, generator=gen) * std)

    damped = {id(b.bns[-1]) for b in model.modules()
              if isinstance(b, XceptionBlock) and b.shortcut is not None}
    bns = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            normal(m.weight, m.weight[0].numel() ** -0.5)
        elif isinstance(m, nn.Linear):
            normal(m.weight, m.weight.shape[1] ** -0.5)
            normal(m.bias, 0.1)
        elif isinstance(m, nn.BatchNorm2d):
            low, high = (0.1, 0.3) if id(m) in damped else (0.3, 0.9)
            m.weight.copy_(torch.rand(m.weight.shape, generator=gen) * (high - low) + low)
            normal(m.bias, 0.2)
            m.reset_running_stats()
            bns.append((m, m.momentum))
            m.momentum = None  # cumulative average: one batch sets the real statistics
    model.train()
    model(torch.rand(2, in_chans, size, size, generator=gen) * 2 - 1)
    for m, momentum in bns:
        m.momentum = momentum
        var = m.running_var
        m.running_mean.add_(torch.randn(var.shape, generator=gen) * 0.05 * var.sqrt())
        var.mul_(torch.rand(var.shape, generator=gen) * 0.4 + 0.8)
    return model.eval()


def images(n: int, size: int, seed: int = 1, in_chans: int = 3) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, in_chans, size, size, generator=gen) * 2 - 1


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


def randomize_bn(model: nn.Module) -> nn.Module:
    """Non-trivial statistics and affine parameters, so folding has something to get wrong."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=gen) * 0.2)
                m.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(c, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(c, generator=gen) * 0.2)
    return model
