"""Triton depthwise convolution on NHWC activations with the previous BN + ReLU as a prologue.

In Xception every depthwise conv reads ``relu(bn(z))`` of the previous pointwise conv's output
``z``. Applying the BN affine map and the ReLU while loading ``z`` means the normalised
activation is never written to memory, nor stored for backward: the backward kernels recompute
it from ``z``. Zero padding pads the activation (after the prologue), as the unfused model does.
Weights are passed as [KH*KW, C] so a program's channels are contiguous.
"""

from __future__ import annotations

import torch
import triton.language as tl

from .launch import TARGET_PROGRAMS, cdiv, channel_block, launch, next_pow2, rows_block

BLOCK_P = 32            # output (or input) positions per program
WEIGHT_ROWS = 64        # positions per step of the weight-gradient reduction


def _dw_forward_kernel(x_ptr, w_ptr, y_ptr, scale_ptr, shift_ptr, P, H, W, C, OH, OW,
                       stride, pad_t, pad_l, dil, KH: tl.constexpr, KW: tl.constexpr,
                       HAS_BN: tl.constexpr, RELU: tl.constexpr,
                       BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    pmask = p < P
    cmask = c < C
    ow = p % OW
    oh = (p // OW) % OH
    n = p // (OW * OH)
    if HAS_BN:
        scale = tl.load(scale_ptr + c, mask=cmask, other=0.0)
        shift = tl.load(shift_ptr + c, mask=cmask, other=0.0)
    acc = tl.zeros([BLOCK_P, BLOCK_C], dtype=tl.float32)
    for kh in tl.static_range(KH):
        ih = oh * stride - pad_t + kh * dil
        hin = pmask & (ih >= 0) & (ih < H)
        for kw in tl.static_range(KW):
            iw = ow * stride - pad_l + kw * dil
            inb = hin & (iw >= 0) & (iw < W)
            mask = inb[:, None] & cmask[None, :]
            row = ((n * H + ih) * W + iw).to(tl.int64)
            v = tl.load(x_ptr + row[:, None] * C + c[None, :], mask=mask, other=0.0).to(tl.float32)
            if HAS_BN:
                v = v * scale[None, :] + shift[None, :]
            if RELU:
                v = tl.maximum(v, 0.0)
            if HAS_BN:
                v = tl.where(mask, v, 0.0)
            wk = tl.load(w_ptr + (kh * KW + kw) * C + c, mask=cmask, other=0.0).to(tl.float32)
            acc += v * wk[None, :]
    out = p.to(tl.int64)[:, None] * C + c[None, :]
    tl.store(y_ptr + out, acc.to(y_ptr.dtype.element_ty), mask=pmask[:, None] & cmask[None, :])


def _dw_backward_input_kernel(g_ptr, x_ptr, w_ptr, gu_ptr, scale_ptr, shift_ptr, mean_ptr,
                              sg_ptr, sgx_ptr, P, H, W, C, OH, OW, stride, pad_t, pad_l, dil,
                              KH: tl.constexpr, KW: tl.constexpr, HAS_BN: tl.constexpr,
                              RELU: tl.constexpr, STATS: tl.constexpr,
                              BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """Gradient w.r.t. the prologue's pre-ReLU value u (= bn(x), or x): a gather over the
    output positions whose window holds this input position, masked by u > 0. With STATS it
    also writes this program's partial sums of gu and gu * (x - mean), the BN backward's
    reductions, while gu is still in registers."""
    p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    pmask = p < P
    cmask = c < C
    iw = p % W
    ih = (p // W) % H
    n = p // (W * H)
    acc = tl.zeros([BLOCK_P, BLOCK_C], dtype=tl.float32)
    for kh in tl.static_range(KH):
        th = ih + pad_t - kh * dil
        oh = th // stride
        hok = pmask & (th >= 0) & (th % stride == 0) & (oh < OH)
        for kw in tl.static_range(KW):
            tw = iw + pad_l - kw * dil
            ow = tw // stride
            ok = hok & (tw >= 0) & (tw % stride == 0) & (ow < OW)
            mask = ok[:, None] & cmask[None, :]
            row = ((n * OH + oh) * OW + ow).to(tl.int64)
            g = tl.load(g_ptr + row[:, None] * C + c[None, :], mask=mask, other=0.0).to(tl.float32)
            wk = tl.load(w_ptr + (kh * KW + kw) * C + c, mask=cmask, other=0.0).to(tl.float32)
            acc += g * wk[None, :]
    out = p.to(tl.int64)[:, None] * C + c[None, :]
    omask = pmask[:, None] & cmask[None, :]
    if RELU or STATS:
        xv = tl.load(x_ptr + out, mask=omask, other=0.0).to(tl.float32)
    if RELU:
        u = xv
        if HAS_BN:
            scale = tl.load(scale_ptr + c, mask=cmask, other=0.0)
            shift = tl.load(shift_ptr + c, mask=cmask, other=0.0)
            u = xv * scale[None, :] + shift[None, :]
        acc = tl.where(u > 0.0, acc, 0.0)
    tl.store(gu_ptr + out, acc.to(gu_ptr.dtype.element_ty), mask=omask)
    if STATS:
        acc = tl.where(omask, acc, 0.0)
        mean = tl.load(mean_ptr + c, mask=cmask, other=0.0)
        part = tl.program_id(0) * C + c
        tl.store(sg_ptr + part, tl.sum(acc, axis=0), mask=cmask)
        tl.store(sgx_ptr + part, tl.sum(acc * (xv - mean[None, :]), axis=0), mask=cmask)


def _dw_backward_weight_kernel(g_ptr, x_ptr, part_ptr, scale_ptr, shift_ptr, P, H, W, C, OH, OW,
                               stride, pad_t, pad_l, dil, rows_per_prog,
                               KH: tl.constexpr, KW: tl.constexpr, KK_PAD: tl.constexpr,
                               HAS_BN: tl.constexpr, RELU: tl.constexpr,
                               BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """Partial weight gradients over ``rows_per_prog`` output positions: one [KH*KW, C] slab
    per program, summed afterwards (no atomics, so results do not depend on timing)."""
    pid = tl.program_id(0)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = c < C
    taps = tl.arange(0, KK_PAD)
    if HAS_BN:
        scale = tl.load(scale_ptr + c, mask=cmask, other=0.0)
        shift = tl.load(shift_ptr + c, mask=cmask, other=0.0)
    acc = tl.zeros([KK_PAD, BLOCK_C], dtype=tl.float32)
    p0 = pid * rows_per_prog
    p_end = tl.minimum(p0 + rows_per_prog, P)
    for start in range(p0, p_end, BLOCK_P):
        p = start + tl.arange(0, BLOCK_P)
        pmask = p < p_end
        ow = p % OW
        oh = (p // OW) % OH
        n = p // (OW * OH)
        gmask = pmask[:, None] & cmask[None, :]
        g = tl.load(g_ptr + p.to(tl.int64)[:, None] * C + c[None, :], mask=gmask,
                    other=0.0).to(tl.float32)
        for kh in tl.static_range(KH):
            ih = oh * stride - pad_t + kh * dil
            hin = pmask & (ih >= 0) & (ih < H)
            for kw in tl.static_range(KW):
                iw = ow * stride - pad_l + kw * dil
                mask = (hin & (iw >= 0) & (iw < W))[:, None] & cmask[None, :]
                row = ((n * H + ih) * W + iw).to(tl.int64)
                v = tl.load(x_ptr + row[:, None] * C + c[None, :], mask=mask,
                            other=0.0).to(tl.float32)
                if HAS_BN:
                    v = v * scale[None, :] + shift[None, :]
                if RELU:
                    v = tl.maximum(v, 0.0)
                s = tl.sum(tl.where(mask, g * v, 0.0), axis=0)
                acc = tl.where(taps[:, None] == kh * KW + kw, acc + s[None, :], acc)
    out = (pid * KK_PAD + taps).to(tl.int64)[:, None] * C + c[None, :]
    tl.store(part_ptr + out, acc, mask=(taps < KH * KW)[:, None] & cmask[None, :])


def _geometry(x: torch.Tensor, out_hw: tuple[int, int]) -> tuple[int, int, int, int, int, int]:
    n, c, h, w = x.shape
    return n, c, h, w, out_hw[0], out_hw[1]


def _affine_args(x: torch.Tensor, scale: torch.Tensor | None,
                 shift: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    # unused pointers when there is no BN prologue: any valid tensor will do
    return (x, x) if scale is None else (scale, shift)


def dw_forward(x: torch.Tensor, w_taps: torch.Tensor, kernel: tuple[int, int], stride: int,
               pads: tuple[int, int], dilation: int, out_hw: tuple[int, int],
               scale: torch.Tensor | None, shift: torch.Tensor | None, relu: bool) -> torch.Tensor:
    """x: (N, C, H, W) channels_last; w_taps: [KH*KW, C]; returns (N, C, OH, OW) channels_last."""
    n, c, h, w, oh, ow = _geometry(x, out_hw)
    y = torch.empty((n, c, oh, ow), device=x.device, dtype=x.dtype,
                    memory_format=torch.channels_last)
    p = n * oh * ow
    block_c = channel_block(c)
    sc, sh = _affine_args(x, scale, shift)
    block_p = rows_block(BLOCK_P)
    launch(_dw_forward_kernel, (cdiv(p, block_p), cdiv(c, block_c)), x, w_taps, y, sc, sh,
           p, h, w, c, oh, ow, stride, pads[0], pads[1], dilation, KH=kernel[0], KW=kernel[1],
           HAS_BN=scale is not None, RELU=relu, BLOCK_P=block_p, BLOCK_C=block_c)
    return y


def dw_backward_input(g: torch.Tensor, x: torch.Tensor, w_taps: torch.Tensor,
                      kernel: tuple[int, int], stride: int, pads: tuple[int, int], dilation: int,
                      scale: torch.Tensor | None, shift: torch.Tensor | None, relu: bool,
                      mean: torch.Tensor | None = None):
    """(gu, partial sums) : the gradient w.r.t. the pre-ReLU prologue value, shaped like x
    (channels_last), and, given the BN's ``mean``, the [P, C] partial sums of gu and
    gu * (x - mean) for ``finalize_backward`` (else None)."""
    n, c, h, w = x.shape
    oh, ow = g.shape[-2:]
    gu = torch.empty_like(x, memory_format=torch.channels_last)
    p = n * h * w
    block_c = channel_block(c)
    sc, sh = _affine_args(x, scale, shift)
    block_p = rows_block(BLOCK_P)
    progs = cdiv(p, block_p)
    sums = None
    if mean is not None:
        sums = torch.empty(2, progs, c, device=x.device, dtype=torch.float32)
    launch(_dw_backward_input_kernel, (progs, cdiv(c, block_c)), g, x, w_taps, gu, sc, sh,
           x if mean is None else mean, gu if sums is None else sums[0],
           gu if sums is None else sums[1], p, h, w, c, oh, ow, stride, pads[0], pads[1],
           dilation, KH=kernel[0], KW=kernel[1], HAS_BN=scale is not None, RELU=relu,
           STATS=mean is not None, BLOCK_P=block_p, BLOCK_C=block_c)
    return gu, sums


def dw_backward_weight(g: torch.Tensor, x: torch.Tensor, kernel: tuple[int, int], stride: int,
                       pads: tuple[int, int], dilation: int, scale: torch.Tensor | None,
                       shift: torch.Tensor | None, relu: bool) -> torch.Tensor:
    """Weight gradient as [KH*KW, C], float32."""
    n, c, h, w = x.shape
    oh, ow = g.shape[-2:]
    p = n * oh * ow
    block_c = channel_block(c)
    rows = rows_block(WEIGHT_ROWS)
    progs = max(1, min(cdiv(p, rows), TARGET_PROGRAMS // cdiv(c, block_c)))
    rows_per_prog = cdiv(cdiv(p, progs), rows) * rows
    progs = cdiv(p, rows_per_prog)
    kk_pad = next_pow2(kernel[0] * kernel[1])
    part = torch.empty(progs, kk_pad, c, device=x.device, dtype=torch.float32)
    sc, sh = _affine_args(x, scale, shift)
    launch(_dw_backward_weight_kernel, (progs, cdiv(c, block_c)), g, x, part, sc, sh, p, h, w, c,
           oh, ow, stride, pads[0], pads[1], dilation, rows_per_prog, KH=kernel[0], KW=kernel[1],
           KK_PAD=kk_pad, HAS_BN=scale is not None, RELU=relu, BLOCK_P=rows,
           BLOCK_C=block_c)
    return part[:, : kernel[0] * kernel[1]].sum(0)
