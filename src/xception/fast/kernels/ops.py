"""Fused ops with autograd: each takes the model's own modules and runs the Triton kernels where
they can (CUDA tensors, or CPU tensors under the interpreter), else the modules themselves.

- ``batchnorm_act(x, bn, relu, residual)``: act(bn(x) + residual)
- ``depthwise_conv(x, conv, bn, relu)``: conv(act(bn(x))), the BN + ReLU applied while loading
- ``maxpool_add(x, pool, bn, residual, res_bn)``: pool(bn(x)) + res_bn(residual)

BatchNorm semantics are PyTorch's: batch statistics in training mode (running statistics
updated with the unbiased variance, as ``nn.BatchNorm2d`` does), running statistics in eval
mode; the backward passes include the gradient through the batch statistics.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ...models.layers import MaxPool2d, same_padding
from .launch import kernels_run_on

CL = torch.channels_last


def _cl(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=CL)


def _rows(x: torch.Tensor) -> torch.Tensor:
    """An (N, C, H, W) channels_last tensor as its [N*H*W, C] matrix (a view)."""
    return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])


def _from_rows(y2d: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    n, c, h, w = like.shape
    return y2d.view(n, h, w, c).permute(0, 3, 1, 2)


@dataclass
class BNState:
    """One BatchNorm's numbers for this step: rows mean, var, invstd, scale, shift ([5, C],
    float32) of the statistics used, and whether they are this batch's (gradient flows through
    them) or the running ones."""

    gamma: torch.Tensor | None
    stats: torch.Tensor
    batch: bool

    @property
    def mean(self) -> torch.Tensor:
        return self.stats[0]

    @property
    def invstd(self) -> torch.Tensor:
        return self.stats[2]

    @property
    def scale(self) -> torch.Tensor:
        return self.stats[3]

    @property
    def shift(self) -> torch.Tensor:
        return self.stats[4]


def bn_state(bn: nn.BatchNorm2d, x: torch.Tensor) -> BNState:
    """Statistics as ``bn`` would use them on ``x`` (updating its running buffers in training)."""
    from .batchnorm import batch_stats

    weight = None if bn.weight is None else bn.weight.detach()
    bias = None if bn.bias is None else bn.bias.detach()
    if bn.training or bn.running_mean is None:
        update = bn.training and bn.track_running_stats and bn.running_mean is not None
        momentum = 0.0
        if update:
            bn.num_batches_tracked.add_(1)
            momentum = bn.momentum if bn.momentum is not None \
                else 1.0 / float(bn.num_batches_tracked)
        stats = batch_stats(_rows(x), weight, bias, bn.running_mean if update else None,
                            bn.running_var if update else None, momentum, bn.eps)
        return BNState(bn.weight, stats, True)
    mean, var = bn.running_mean.float(), bn.running_var.float()
    invstd = torch.rsqrt(var + bn.eps)
    scale = invstd if weight is None else weight.float() * invstd
    shift = -mean * scale if bias is None else bias.float() - mean * scale
    return BNState(bn.weight, torch.stack([mean, var, invstd, scale, shift]), False)


def bn_backward(g: torch.Tensor, x: torch.Tensor, res: torch.Tensor | None, st: BNState,
                relu: bool, write_dres: bool, sums: torch.Tensor | None = None):
    """(dx, dres, dgamma, dbeta) of y = act(bn(x) [+ res]) given dL/dy, all NHWC. ``sums``:
    the reductions' partial sums if the kernel that produced ``g`` computed them already."""
    from .batchnorm import backward_apply, backward_coefficients, finalize_backward

    g2d, x2d = _rows(g), _rows(x)
    r2d = None if res is None else _rows(res)
    if sums is None:
        k = backward_coefficients(g2d, x2d, r2d, st.stats, relu, st.batch)
    else:
        k = finalize_backward(sums[0], sums[1], x2d.shape[0], st.stats, st.batch)
    dx, dres = backward_apply(g2d, x2d, r2d, st.scale, st.shift, st.scale, k[0], k[1], relu,
                              write_dres)
    return (_from_rows(dx, x), None if dres is None else _from_rows(dres, x), k[2], k[3])


def _param_grad(grad: torch.Tensor, param: torch.Tensor | None, needed: bool):
    return grad.to(param.dtype) if needed and param is not None else None


def _affine(st: BNState | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(scale, shift) of an optional BN prologue, as the kernels take them."""
    return (None, None) if st is None else (st.scale, st.shift)


def _through_bn(g: torch.Tensor, x: torch.Tensor, st: BNState | None, need_gamma: bool,
                need_beta: bool, sums: torch.Tensor | None = None):
    """(dx, dgamma, dbeta) of an optional BN (no activation) on ``x``, given ``g`` = dL/d bn(x)."""
    if st is None:
        return g, None, None
    dx, _, dg, db = bn_backward(g, x, None, st, relu=False, write_dres=False, sums=sums)
    return dx, _param_grad(dg, st.gamma, need_gamma), _param_grad(db, st.gamma, need_beta)


class _BatchNormAct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, gamma, beta, residual, st: BNState, relu: bool):
        from .batchnorm import affine_act

        y = affine_act(_rows(x), st.scale, st.shift, None if residual is None else _rows(residual),
                       relu)
        ctx.st, ctx.relu = st, relu
        ctx.save_for_backward(x, residual)
        return _from_rows(y, x)

    @staticmethod
    def backward(ctx, gy):
        x, residual = ctx.saved_tensors
        st = ctx.st
        dx, dres, dgamma, dbeta = bn_backward(_cl(gy), x, residual, st, ctx.relu,
                                              ctx.needs_input_grad[3])
        return (dx, _param_grad(dgamma, st.gamma, ctx.needs_input_grad[1]),
                _param_grad(dbeta, st.gamma, ctx.needs_input_grad[2]), dres, None, None)


def batchnorm_act(x: torch.Tensor, bn: nn.BatchNorm2d | None, relu: bool = False,
                  residual: torch.Tensor | None = None) -> torch.Tensor:
    """act(bn(x) + residual) in one pass over x (plus one for the statistics in training).
    ``bn=None`` (folded away) leaves act(x + residual) to PyTorch: one pass either way."""
    if bn is None or not kernels_run_on(x):
        y = x if bn is None else bn(x)
        if residual is not None:
            y = y + residual
        return F.relu(y) if relu else y
    x = _cl(x)
    residual = None if residual is None else _cl(residual)
    return _BatchNormAct.apply(x, bn.weight, bn.bias, residual, bn_state(bn, x), relu)


@dataclass(frozen=True)
class ConvGeometry:
    kernel: tuple[int, int]
    stride: int
    dilation: int
    pads: tuple[int, int]          # top, left (bottom/right follow from the output size)
    out_hw: tuple[int, int]


def conv_geometry(conv: nn.Conv2d, h: int, w: int) -> ConvGeometry:
    """Where the conv's windows fall, including the size-dependent TF-"same" padding."""
    kh, kw = conv.kernel_size
    s, d = conv.stride[0], conv.dilation[0]
    if getattr(conv, "dynamic_pad", False):
        (top, bottom), (left, right) = same_padding(h, kh, s, d), same_padding(w, kw, s, d)
    else:
        (top, left), (bottom, right) = conv.padding, conv.padding
    oh = (h + top + bottom - d * (kh - 1) - 1) // s + 1
    ow = (w + left + right - d * (kw - 1) - 1) // s + 1
    return ConvGeometry((kh, kw), s, d, (top, left), (oh, ow))


def depthwise_supported(conv: nn.Module) -> bool:
    """A depthwise (multiplier 1), bias-free conv with integer padding and equal strides."""
    return (isinstance(conv, nn.Conv2d) and conv.groups == conv.in_channels == conv.out_channels
            and conv.bias is None and not isinstance(conv.padding, str)
            and conv.stride[0] == conv.stride[1] and conv.dilation[0] == conv.dilation[1]
            and conv.padding_mode == "zeros")


class _DepthwiseConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, gamma, beta, st: BNState | None, relu: bool, geo: ConvGeometry):
        from .depthwise import dw_forward

        c = x.shape[1]
        taps = weight.detach().reshape(c, -1).t().contiguous()
        y = dw_forward(x, taps, geo.kernel, geo.stride, geo.pads, geo.dilation, geo.out_hw,
                       *_affine(st), relu)
        ctx.st, ctx.relu, ctx.geo = st, relu, geo
        ctx.save_for_backward(x, weight, taps)
        return y

    @staticmethod
    def backward(ctx, gy):
        from .depthwise import dw_backward_input, dw_backward_weight

        x, weight, taps = ctx.saved_tensors
        st, geo, relu = ctx.st, ctx.geo, ctx.relu
        gy = _cl(gy)
        scale, shift = _affine(st)
        dweight = dx = dgamma = dbeta = None
        if ctx.needs_input_grad[1]:
            dw = dw_backward_weight(gy, x, geo.kernel, geo.stride, geo.pads, geo.dilation,
                                    scale, shift, relu)
            dweight = dw.t().reshape(weight.shape).to(weight.dtype)
        if any(ctx.needs_input_grad[i] for i in (0, 2, 3)):
            gu, sums = dw_backward_input(gy, x, taps, geo.kernel, geo.stride, geo.pads,
                                         geo.dilation, scale, shift, relu,
                                         None if st is None else st.mean)
            dx, dgamma, dbeta = _through_bn(gu, x, st, ctx.needs_input_grad[2],
                                            ctx.needs_input_grad[3], sums)
        return dx, dweight, dgamma, dbeta, None, None, None


def depthwise_conv(x: torch.Tensor, conv: nn.Conv2d, bn: nn.BatchNorm2d | None = None,
                   relu: bool = False) -> torch.Tensor:
    """conv(relu(bn(x))) where conv is depthwise; the BN and ReLU never touch memory."""
    if not (kernels_run_on(x) and depthwise_supported(conv)):
        a = x if bn is None else bn(x)
        return conv(F.relu(a) if relu else a)
    x = _cl(x)
    geo = conv_geometry(conv, x.shape[-2], x.shape[-1])
    st = None if bn is None else bn_state(bn, x)
    gamma = None if bn is None else bn.weight
    beta = None if bn is None else bn.bias
    return _DepthwiseConv.apply(x, conv.weight, gamma, beta, st, relu, geo)


def pool_geometry(pool: nn.Module, h: int, w: int) -> ConvGeometry | None:
    """Window placement of the package's max-pools ("-inf" padding), or None if unknown."""
    if isinstance(pool, MaxPool2d) and pool.fixed is None and pool.pad_mode == "tf_same":
        k, s = pool.kernel_size, pool.stride
        (top, bottom), (left, right) = same_padding(h, k, s), same_padding(w, k, s)
    elif isinstance(pool, MaxPool2d):
        k, s = pool.kernel_size, pool.stride
        top = bottom = left = right = pool.fixed
    else:
        return None
    return ConvGeometry((k, k), s, 1, (top, left),
                        ((h + top + bottom - k) // s + 1, (w + left + right - k) // s + 1))


class _MaxPoolAdd(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, gamma, beta, residual, rgamma, rbeta, st: BNState | None,
                rst: BNState | None, geo: ConvGeometry):
        from .maxpool import pool_forward

        y, idx = pool_forward(x, geo.kernel[0], geo.stride, geo.pads, geo.out_hw,
                              *_affine(st), residual, *_affine(rst))
        ctx.st, ctx.rst, ctx.geo = st, rst, geo
        ctx.save_for_backward(x, residual, idx)
        return y

    @staticmethod
    def backward(ctx, gy):
        from .maxpool import pool_backward

        x, residual, idx = ctx.saved_tensors
        st, rst, geo = ctx.st, ctx.rst, ctx.geo
        gy = _cl(gy)
        need = ctx.needs_input_grad
        dx = dgamma = dbeta = dres = drgamma = drbeta = None
        if need[0] or need[1] or need[2]:
            gu, sums = pool_backward(gy, idx, x, geo.kernel[0], geo.stride, geo.pads,
                                     None if st is None else st.mean)
            dx, dgamma, dbeta = _through_bn(gu, x, st, need[1], need[2], sums)
        if residual is not None and (need[3] or need[4] or need[5]):
            dres, drgamma, drbeta = _through_bn(gy, residual, rst, need[4], need[5])
        return dx, dgamma, dbeta, dres, drgamma, drbeta, None, None, None


def maxpool_add(x: torch.Tensor, pool: nn.Module, bn: nn.BatchNorm2d | None = None,
                residual: torch.Tensor | None = None,
                res_bn: nn.BatchNorm2d | None = None) -> torch.Tensor:
    """pool(bn(x)) + res_bn(residual): a downsampling block's tail in one pass."""
    geo = pool_geometry(pool, x.shape[-2], x.shape[-1])
    if geo is None or not kernels_run_on(x):
        y = pool(x if bn is None else bn(x))
        if residual is not None:
            y = y + (residual if res_bn is None else res_bn(residual))
        return y
    x = _cl(x)
    residual = None if residual is None else _cl(residual)
    st = None if bn is None else bn_state(bn, x)
    rst = None if res_bn is None or residual is None else bn_state(res_bn, residual)
    return _MaxPoolAdd.apply(x, None if bn is None else bn.weight, None if bn is None else bn.bias,
                             residual, None if rst is None else res_bn.weight,
                             None if rst is None else res_bn.bias, st, rst, geo)
