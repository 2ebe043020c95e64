"""Triton NHWC max-pooling with the BN before it as a prologue and the residual add after it.

Xception's downsampling blocks end ``maxpool(bn(z)) + bn_s(shortcut(x))``: one kernel reads
``z`` and the shortcut conv's output, applies both BatchNorms' affine maps, pools, adds and
writes the block output, plus a one-byte window index per output for backward. Padding is
"-inf" (TF "same" or symmetric), so it never wins. Backward gathers, for every input position,
the gradients of the windows whose maximum it was; no atomics.
"""

from __future__ import annotations

import torch
import triton.language as tl

from .launch import cdiv, channel_block, launch, rows_block

BLOCK_P = 32


def _pool_forward_kernel(x_ptr, y_ptr, idx_ptr, res_ptr, scale_ptr, shift_ptr, rscale_ptr,
                         rshift_ptr, P, H, W, C, OH, OW, stride, pad_t, pad_l,
                         K: tl.constexpr, HAS_BN: tl.constexpr, HAS_RES: tl.constexpr,
                         RES_BN: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
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
    best = tl.full([BLOCK_P, BLOCK_C], float("-inf"), dtype=tl.float32)
    arg = tl.zeros([BLOCK_P, BLOCK_C], dtype=tl.int32)
    for kh in tl.static_range(K):
        ih = oh * stride - pad_t + kh
        hin = pmask & (ih >= 0) & (ih < H)
        for kw in tl.static_range(K):
            iw = ow * stride - pad_l + kw
            mask = (hin & (iw >= 0) & (iw < W))[:, None] & cmask[None, :]
            row = ((n * H + ih) * W + iw).to(tl.int64)
            v = tl.load(x_ptr + row[:, None] * C + c[None, :], mask=mask, other=0.0).to(tl.float32)
            if HAS_BN:
                v = v * scale[None, :] + shift[None, :]
            v = tl.where(mask, v, float("-inf"))
            # first maximum wins and NaN propagates, as in PyTorch's kernels
            take = (v > best) | (v != v)
            best = tl.where(take, v, best)
            arg = tl.where(take, kh * K + kw, arg)
    out = p.to(tl.int64)[:, None] * C + c[None, :]
    omask = pmask[:, None] & cmask[None, :]
    if HAS_RES:
        r = tl.load(res_ptr + out, mask=omask, other=0.0).to(tl.float32)
        if RES_BN:
            rscale = tl.load(rscale_ptr + c, mask=cmask, other=0.0)
            rshift = tl.load(rshift_ptr + c, mask=cmask, other=0.0)
            r = r * rscale[None, :] + rshift[None, :]
        best += r
    tl.store(y_ptr + out, best.to(y_ptr.dtype.element_ty), mask=omask)
    tl.store(idx_ptr + out, arg.to(tl.int8), mask=omask)


def _pool_backward_kernel(g_ptr, idx_ptr, gu_ptr, x_ptr, mean_ptr, sg_ptr, sgx_ptr, P, H, W, C,
                          OH, OW, stride, pad_t, pad_l, K: tl.constexpr, STATS: tl.constexpr,
                          BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """Gradient w.r.t. the pooled input; with STATS also this program's partial sums of it and
    of it times (x - mean), for the BatchNorm before the pool."""
    p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    pmask = p < P
    cmask = c < C
    iw = p % W
    ih = (p // W) % H
    n = p // (W * H)
    acc = tl.zeros([BLOCK_P, BLOCK_C], dtype=tl.float32)
    for kh in tl.static_range(K):
        th = ih + pad_t - kh
        oh = th // stride
        hok = pmask & (th >= 0) & (th % stride == 0) & (oh < OH)
        for kw in tl.static_range(K):
            tw = iw + pad_l - kw
            ow = tw // stride
            mask = (hok & (tw >= 0) & (tw % stride == 0) & (ow < OW))[:, None] & cmask[None, :]
            row = ((n * OH + oh) * OW + ow).to(tl.int64)
            offs = row[:, None] * C + c[None, :]
            which = tl.load(idx_ptr + offs, mask=mask, other=-1).to(tl.int32)
            g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            acc += tl.where(which == kh * K + kw, g, 0.0)
    out = p.to(tl.int64)[:, None] * C + c[None, :]
    omask = pmask[:, None] & cmask[None, :]
    tl.store(gu_ptr + out, acc.to(gu_ptr.dtype.element_ty), mask=omask)
    if STATS:
        xv = tl.load(x_ptr + out, mask=omask, other=0.0).to(tl.float32)
        mean = tl.load(mean_ptr + c, mask=cmask, other=0.0)
        acc = tl.where(omask, acc, 0.0)
        part = tl.program_id(0) * C + c
        tl.store(sg_ptr + part, tl.sum(acc, axis=0), mask=cmask)
        tl.store(sgx_ptr + part, tl.sum(acc * (xv - mean[None, :]), axis=0), mask=cmask)


def pool_forward(x: torch.Tensor, kernel: int, stride: int, pads: tuple[int, int],
                 out_hw: tuple[int, int], scale: torch.Tensor | None, shift: torch.Tensor | None,
                 res: torch.Tensor | None, rscale: torch.Tensor | None,
                 rshift: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(maxpool(x * scale + shift) + (res * rscale + rshift), window indices), channels_last."""
    n, c, h, w = x.shape
    oh, ow = out_hw
    y = torch.empty((n, c, oh, ow), device=x.device, dtype=x.dtype,
                    memory_format=torch.channels_last)
    idx = torch.empty((n, c, oh, ow), device=x.device, dtype=torch.int8,
                      memory_format=torch.channels_last)
    p = n * oh * ow
    block_c = channel_block(c)
    sc, sh = (x, x) if scale is None else (scale, shift)
    rsc, rsh = (x, x) if rscale is None else (rscale, rshift)
    block_p = rows_block(BLOCK_P)
    launch(_pool_forward_kernel, (cdiv(p, block_p), cdiv(c, block_c)), x, y, idx,
           x if res is None else res, sc, sh, rsc, rsh, p, h, w, c, oh, ow, stride, pads[0],
           pads[1], K=kernel, HAS_BN=scale is not None, HAS_RES=res is not None,
           RES_BN=rscale is not None, BLOCK_P=block_p, BLOCK_C=block_c)
    return y, idx


def pool_backward(g: torch.Tensor, idx: torch.Tensor, x: torch.Tensor, kernel: int,
                  stride: int, pads: tuple[int, int], mean: torch.Tensor | None = None):
    """(gu, partial sums): the gradient w.r.t. the pooled input (the BN output), channels_last
    in x's dtype, and given the BN's ``mean`` the [2, P, C] partial sums for
    ``finalize_backward`` (else None)."""
    n, c, h, w = x.shape
    oh, ow = g.shape[-2:]
    gu = torch.empty_like(x, memory_format=torch.channels_last)
    p = n * h * w
    block_c = channel_block(c)
    block_p = rows_block(BLOCK_P)
    progs = cdiv(p, block_p)
    sums = None
    if mean is not None:
        sums = torch.empty(2, progs, c, device=x.device, dtype=torch.float32)
    launch(_pool_backward_kernel, (progs, cdiv(c, block_c)), g, idx, gu, x,
           x if mean is None else mean, gu if sums is None else sums[0],
           gu if sums is None else sums[1], p, h, w, c, oh, ow, stride, pads[0], pads[1],
           K=kernel, STATS=mean is not None, BLOCK_P=block_p, BLOCK_C=block_c)
    return gu, sums
