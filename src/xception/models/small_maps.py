"""CPU training paths for small feature maps, where oneDNN's convolution backward is slow.

PyTorch's CPU convolution (oneDNN, torch 2.6-2.14) is slow at two things a small-image Xception
does all the time (measured on 2 cores: benchmarks/RESULTS.md, "CPU training speed: this
version against the previous one (measured)", items 1 and 5):

- the weight gradient of a depthwise conv whose input is smaller than the kernel: on 2x2 maps it
  takes many times what a whole 3x3 map takes. Xception trained at 32 px runs its exit flow at
  2x2. Here the forward and the input gradient stay PyTorch's; the weight gradient is written out
  as one product-and-sum per kernel tap, the definition of the convolution's weight gradient.
- the backward of a 1x1 (pointwise) conv on maps of at most 4x4 pixels: a 1x1 conv is a matrix
  product over the channels, and on a channels_last tensor ``F.linear`` computes it on the NHWC
  view without a copy. For the middle flow of a 32 px ``xception_small`` (64 x 256 x 4 x 4, 256
  out) forward + backward are faster that way than through the conv. On larger maps the conv is
  as fast or faster, so they keep it; inference keeps the conv too.

Same function, same gradients (up to float summation order).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _eager_weight_grad(weight: torch.Tensor) -> bool:
    """The weight's gradient will be taken by eager autograd (not under tracing, scripting or
    torch.compile, which keep PyTorch's conv)."""
    if not (torch.is_grad_enabled() and weight.requires_grad):
        return False
    return not (torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling())


def needs_small_map_path(x: torch.Tensor, weight: torch.Tensor, groups: int,
                         dilation: tuple[int, ...]) -> bool:
    """A depthwise conv on CPU whose weight gradient will be taken and whose map is smaller than
    the kernel's extent (the case oneDNN is slow at)."""
    if groups == 1 or x.device.type != "cpu" or x.dim() != 4:  # most convs stop here
        return False
    if groups != x.shape[1] or weight.shape[0] != groups or not _eager_weight_grad(weight):
        return False
    if torch.is_autocast_enabled("cpu") or x.dtype != weight.dtype:
        return False
    kernel_rows, kernel_columns = weight.shape[-2:]
    return (x.shape[-2] < (kernel_rows - 1) * dilation[0] + 1
            or x.shape[-1] < (kernel_columns - 1) * dilation[1] + 1)


class SmallMapDepthwiseConv(torch.autograd.Function):
    """``F.conv2d(x, weight, None, stride, padding, dilation, groups=C)`` for a depthwise weight
    of shape (C, 1, kh, kw), with the weight gradient computed tap by tap."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, stride: tuple[int, int],
                padding: tuple[int, int], dilation: tuple[int, int]) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.geometry = (stride, padding, dilation)
        return F.conv2d(x, weight, None, stride, padding, dilation, x.shape[1])

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):  # noqa: ANN205 - autograd's signature
        x, weight = ctx.saved_tensors
        stride, padding, dilation = ctx.geometry
        grad_input = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_input = torch.ops.aten.convolution_backward(
                grad_output, x, weight, None, list(stride), list(padding), list(dilation), False,
                [0, 0], x.shape[1], [True, False, False])[0]
        if ctx.needs_input_grad[1]:
            grad_weight = laid_out_like(
                tap_weight_grad(grad_output, x, weight.shape, stride, padding, dilation), weight)
        return grad_input, grad_weight, None, None, None


def laid_out_like(grad: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``grad`` with ``weight``'s strides (the gradient layout contract; DDP warns otherwise and
    copies the gradient into its bucket at every step)."""
    if grad.stride() == weight.stride():
        return grad
    return torch.empty_strided(weight.shape, weight.stride(), dtype=grad.dtype,
                               device=grad.device).copy_(grad)


def tap_weight_grad(grad_output: torch.Tensor, x: torch.Tensor, shape: torch.Size,
                    stride: tuple[int, int], padding: tuple[int, int],
                    dilation: tuple[int, int]) -> torch.Tensor:
    """dL/dw[c, 0, i, j] = sum over n, h, w of
    grad_output[n, c, h, w] * x_padded[n, c, h*s + i*d, w*s + j*d]."""
    (row_stride, column_stride), (row_pad, column_pad) = stride, padding
    row_dilation, column_dilation = dilation
    out_rows, out_columns = grad_output.shape[-2:]
    padded = F.pad(x, (column_pad, column_pad, row_pad, row_pad)) if row_pad or column_pad else x

    def positions(tap: int, tap_dilation: int, tap_stride: int, out_size: int) -> slice:
        # the input positions kernel tap ``tap`` meets along one dimension, one per output position
        start = tap * tap_dilation
        return slice(start, start + (out_size - 1) * tap_stride + 1, tap_stride)

    taps = [(grad_output * padded[:, :, positions(i, row_dilation, row_stride, out_rows),
                                  positions(j, column_dilation, column_stride, out_columns)]
             ).sum((0, 2, 3))
            for i in range(shape[-2]) for j in range(shape[-1])]
    return torch.stack(taps, 1).view(shape).to(x.dtype)


def depthwise_conv2d(x: torch.Tensor, weight: torch.Tensor, stride: tuple[int, int],
                     padding: tuple[int, int], dilation: tuple[int, int]) -> torch.Tensor:
    return SmallMapDepthwiseConv.apply(x, weight, stride, padding, dilation)


MATMUL_MAX_PIXELS = 16  # a 1x1 conv's backward goes through F.linear on maps of <= 4x4 pixels


def needs_matmul_path(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """For a 1x1 conv (stride 1, ungrouped: ``layers.PointwiseConv2d``): on CPU, on a
    channels_last map of at most ``MATMUL_MAX_PIXELS`` pixels, its weight gradient to be taken,
    not under autocast (the path was measured without it; as for the depthwise path)."""
    if x.device.type != "cpu" or x.dim() != 4 or x.shape[-2] * x.shape[-1] > MATMUL_MAX_PIXELS:
        return False
    if torch.is_autocast_enabled("cpu") or x.dtype != weight.dtype:
        return False
    return _eager_weight_grad(weight) and x.permute(0, 2, 3, 1).is_contiguous()


def pointwise_conv2d(x: torch.Tensor, weight: torch.Tensor,
                     bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.conv2d(x, weight, bias)`` for a (Co, Ci, 1, 1) weight, as a matrix product on the NHWC
    view of a channels_last ``x``; the result is channels_last as the conv's would be."""
    # the (Co, Ci) view keeps the weight's own strides, so its gradient comes back laid out as
    # the weight is (flatten's would be contiguous: DDP then warns and copies every such grad)
    matrix = weight.as_strided(weight.shape[:2], weight.stride()[:2])
    out = F.linear(x.permute(0, 2, 3, 1), matrix, bias)
    return out.permute(0, 3, 1, 2)
