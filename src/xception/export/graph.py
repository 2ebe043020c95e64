"""The model as an export graph: BatchNorm folded, and TF-"same" padding as shape arithmetic.

The model's own layers work the padding out in Python from ``int(x.shape)`` (exact and fast in
eager mode), which an exporter records as constants: the graph would only be right for the size it
was traced at. ``export_graph`` swaps them for layers that compute the padding from the input's
symbolic size, so one ONNX graph or ``torch.export`` program serves every image size:

- a conv or max-pool whose padding depends on the size pads by ``same_pad_amounts`` (canonical
  expressions: every stride-2 branch of a block gets the same output size expression, which
  ``torch.export`` must be able to prove equal before it adds the two branches);
- a 1x1 stride-s conv with TF padding never pads (its padding is always 0): it becomes a strided
  slice and a stride-1 conv, the same output size expression as the pool beside it;
- every other conv of the package becomes a plain ``F.conv2d`` (no CPU training fast path, whose
  size tests an exporter would record as guards).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..fast import optimize_for_inference
from ..models.layers import Conv2d, MaxPool2d, PointwiseConv2d
from .verify import FALLBACK


def same_pad_amounts(size: Any, kernel: int, stride: int, dilation: int = 1) -> tuple[Any, Any]:
    """(before, after) of TF's "same" padding for a size that may be symbolic (a SymInt under
    ``torch.export``, a traced size under the ONNX exporter), without comparisons or ``max``.

    out = ceil(size / stride); total = (out - 1) * stride + effective kernel - size, which is never
    negative when the effective kernel is at least the stride (the only case asked for here).
    """
    effective = (kernel - 1) * dilation + 1
    out = (size + stride - 1) // stride
    total = (out - 1) * stride + effective - size
    before = total // 2
    return before, total - before


class SamePad(nn.Module):
    """Pad by TF's "same" rule for this input's (symbolic) height and width."""

    def __init__(self, kernel: int, stride: int, dilation: int, value: float) -> None:
        super().__init__()
        self.kernel, self.stride, self.dilation, self.value = kernel, stride, dilation, value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = same_pad_amounts(x.shape[-2], self.kernel, self.stride, self.dilation)
        left, right = same_pad_amounts(x.shape[-1], self.kernel, self.stride, self.dilation)
        return F.pad(x, [left, right, top, bottom], value=self.value)


class ExportConv(nn.Module):
    """A conv of the package as ``F.conv2d``, sharing the original's weight and bias."""

    def __init__(self, conv: nn.Conv2d, where: str) -> None:
        super().__init__()
        self.weight, self.bias = conv.weight, conv.bias
        self.stride, self.dilation, self.groups = conv.stride, conv.dilation, conv.groups
        self.padding = conv.padding
        self.pad: nn.Module | None = None
        self.subsample = 1
        if getattr(conv, "dynamic_pad", False):
            kernel, stride, dilation = conv.kernel_size[0], conv.stride[0], conv.dilation[0]
            effective = (kernel - 1) * dilation + 1
            if effective == 1:  # a 1x1 strided conv: TF's padding is 0 for every size
                self.subsample, self.stride = stride, (1, 1)
            elif effective >= stride:
                self.pad = SamePad(kernel, stride, dilation, 0.0)
                self.padding = (0, 0)
            else:
                raise ConfigError(
                    f"{where}: a {kernel}x{kernel} conv with stride {stride} and TF 'same' "
                    "padding cannot be exported for any image size (its padding needs a max() "
                    f"of the size); {FALLBACK}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.subsample > 1:
            x = x[:, :, ::self.subsample, ::self.subsample]
        if self.pad is not None:
            x = self.pad(x)
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                        self.groups)


class ExportMaxPool(nn.Module):
    """``layers.MaxPool2d`` with its size-dependent padding as ``SamePad`` (-inf fill)."""

    def __init__(self, pool: MaxPool2d) -> None:
        super().__init__()
        self.kernel, self.stride, self.fixed = pool.kernel_size, pool.stride, pool.fixed
        self.pad = None if pool.fixed is not None else \
            SamePad(pool.kernel_size, pool.stride, 1, float("-inf"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad is None:
            return F.max_pool2d(x, self.kernel, self.stride, self.fixed)
        return F.max_pool2d(self.pad(x), self.kernel, self.stride)


def _swap(module: nn.Module, prefix: str = "") -> int:
    swapped = 0
    for name, child in module.named_children():
        where = f"{prefix}{name}"
        if isinstance(child, (Conv2d, PointwiseConv2d)):
            setattr(module, name, ExportConv(child, where))
        elif isinstance(child, MaxPool2d):
            setattr(module, name, ExportMaxPool(child))
        else:
            swapped += _swap(child, f"{where}.")
            continue
        swapped += 1
    return swapped


def export_graph(model: nn.Module, dynamic_size: bool = True) -> nn.Module:
    """A copy of ``model`` to export: eval mode, BatchNorm folded, no gradients; with
    ``dynamic_size`` its TF-"same" padding follows the input's size (see the module doc).
    ``model`` itself is not changed."""
    graph = optimize_for_inference(model, channels_last=False, kernels=False)
    if dynamic_size:
        _swap(graph)
    return graph.eval().requires_grad_(False)
