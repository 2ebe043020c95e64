"""BatchNorm folding: an eval-mode BN after a conv is an affine map per channel, so it can live in
the conv's weight and bias and cost nothing at inference.

The walker knows the modules this package builds (``Stem``, ``Shortcut``, ``XceptionBlock``,
``SpectrumConv``, the Inception V3 baseline's ``BasicConv2d``) and torchvision's ``BasicConv2d``
(when torchvision's Inception is imported: only then can a model hold one). Anything it does not
know keeps its BatchNorm, so folding never changes what a model computes, only how fast.
"""

from __future__ import annotations

import sys

import torch
from torch import nn

from ..models.inception_blocks import BasicConv2d
from ..models.layers import SpectrumConv
from ..models.xception import Shortcut, Stem, XceptionBlock


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Fold ``bn`` (eval mode: running statistics) into the conv that feeds it, in place.

    ``bn(conv(x)) == conv'(x)`` with ``w' = w * s`` and ``b' = (b - mean) * s + beta`` where
    ``s = gamma / sqrt(var + eps)``, per output channel. Computed in float64 so the folded
    weights are the correctly rounded values, not a second source of error.
    """
    if not isinstance(bn, nn.BatchNorm2d) or bn.running_mean is None or bn.running_var is None:
        raise TypeError(f"cannot fold {type(bn).__name__}: a BatchNorm2d with running statistics "
                        "is needed")
    if conv.out_channels != bn.num_features:
        raise ValueError(f"conv has {conv.out_channels} outputs but the BatchNorm {bn.num_features}")
    dtype = conv.weight.dtype
    var, mean = bn.running_var.double(), bn.running_mean.double()
    gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(mean)
    beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(mean)
    scale = gamma / torch.sqrt(var + bn.eps)
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(mean)
    conv.weight.copy_((conv.weight.double() * scale.reshape(-1, 1, 1, 1)).to(dtype))
    new_bias = ((bias - mean) * scale + beta).to(dtype)
    if conv.bias is None:
        conv.bias = nn.Parameter(new_bias, requires_grad=conv.weight.requires_grad)
    else:
        conv.bias.copy_(new_bias)


def _fold_spectrum_mid_norm(sep: SpectrumConv) -> int:
    """The optional BN between the two ops of a spectrum conv follows the first op."""
    if not isinstance(sep.mid_norm, nn.BatchNorm2d):
        return 0
    first = sep.spatial if sep.order == "depthwise_first" else sep.pointwise
    fold_conv_bn(first, sep.mid_norm)
    sep.mid_norm = nn.Identity()
    return 1


def _fold_block(block: XceptionBlock) -> int:
    """[ReLU] -> SpectrumConv -> BN per width: the BN folds into the spectrum conv's second op."""
    folded = 0
    for i, (sep, bn) in enumerate(zip(block.sepconvs, block.bns, strict=True)):
        if not isinstance(sep, SpectrumConv):
            continue
        folded += _fold_spectrum_mid_norm(sep)
        if isinstance(bn, nn.BatchNorm2d):
            last = sep.pointwise if sep.order == "depthwise_first" else sep.spatial
            fold_conv_bn(last, bn)
            block.bns[i] = nn.Identity()
            folded += 1
    return folded


def _fold_pair(owner: nn.Module, conv_name: str, bn_name: str) -> int:
    conv, bn = getattr(owner, conv_name), getattr(owner, bn_name)
    if not isinstance(conv, nn.Conv2d) or not isinstance(bn, nn.BatchNorm2d):
        return 0
    fold_conv_bn(conv, bn)
    setattr(owner, bn_name, nn.Identity())
    return 1


def fold_batchnorm(model: nn.Module) -> int:
    """Fold every BatchNorm this package knows the position of into its conv, in place.

    The model must be in eval mode (folding uses running statistics; a training-mode model would
    compute something else). Returns how many BatchNorms were folded.
    """
    if model.training:
        raise ValueError("fold_batchnorm needs an eval-mode model (call model.eval() first)")
    conv_bn_units: tuple[type, ...] = (Shortcut, BasicConv2d)
    torchvision_inception = sys.modules.get("torchvision.models.inception")
    if torchvision_inception is not None:  # not imported here: that costs ~1 s (tests/test_import.py)
        conv_bn_units += (torchvision_inception.BasicConv2d,)
    folded = 0
    for module in list(model.modules()):
        if isinstance(module, Stem):
            folded += _fold_pair(module, "conv1", "bn1") + _fold_pair(module, "conv2", "bn2")
        elif isinstance(module, conv_bn_units):
            folded += _fold_pair(module, "conv", "bn")
        elif isinstance(module, XceptionBlock):
            folded += _fold_block(module)
        elif isinstance(module, SpectrumConv):
            # a spectrum conv used on its own: only its inner BN has a known position
            folded += _fold_spectrum_mid_norm(module)
    return folded
