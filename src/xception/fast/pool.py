"""TF-"same" max-pooling without the padded copy.

``layers.MaxPool2d`` pads the input with -inf (a full copy of a large activation) whenever TF's
rule depends on the input size. The same function is PyTorch's own pooling with ``padding`` = the
pixels TF puts *before* the input and ``ceil_mode=True``: the one extra pixel TF puts *after* an
odd total becomes the partial last window that ceil mode adds, where out-of-range pixels are
ignored exactly as -inf padding is. Where that does not hold the layer pads as before.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..models.layers import MaxPool2d, pad_same, same_padding


def ceil_mode_padding(size: int, kernel: int, stride: int) -> int | None:
    """The symmetric padding that, with ``ceil_mode=True``, gives TF's "same" windows, or None."""
    before, after = same_padding(size, kernel, stride)
    if after - before not in (0, 1) or before > kernel // 2:
        return None
    out = -(-size // stride)
    # PyTorch drops a last window that starts in the right padding; TF's never does
    if (out - 1) * stride - before >= size:
        return None
    return before


class SameMaxPool2d(nn.Module):
    """Drop-in for a "tf_same" ``layers.MaxPool2d``; exactly equal outputs (max is exact)."""

    def __init__(self, kernel_size: int = 3, stride: int = 2) -> None:
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel_size, self.stride
        # int(): an ONNX trace bakes the sizes in as constants (see layers.pad_same)
        ph = ceil_mode_padding(int(x.shape[-2]), k, s)
        pw = ceil_mode_padding(int(x.shape[-1]), k, s)
        if ph is None or pw is None:
            return F.max_pool2d(pad_same(x, k, s, 1, float("-inf")), k, s)
        return F.max_pool2d(x, k, s, padding=(ph, pw), ceil_mode=True)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding='tf_same'"


def replace_same_pools(model: nn.Module) -> int:
    """Swap every size-dependent "tf_same" ``layers.MaxPool2d`` for ``SameMaxPool2d``, in place."""
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, MaxPool2d) and child.fixed is None and child.pad_mode == "tf_same":
                setattr(parent, name, SameMaxPool2d(child.kernel_size, child.stride))
                swapped += 1
    return swapped
