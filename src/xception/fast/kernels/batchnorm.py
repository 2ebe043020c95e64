"""Triton kernels for BatchNorm on NHWC activations seen as an [M, C] matrix (M = N*H*W).

Forward: per-channel statistics (``channel_stats``), then one pass that applies the affine map
and fuses the ReLU and residual add (``bn_act_forward``). Backward: one reduction pass
(sum of g and of g*(x-mean), with the ReLU mask recomputed from x) and one pass that writes dx
(and the residual's gradient). Statistics accumulate in float32 whatever the activation dtype.
"""

from __future__ import annotations

import torch
import triton.language as tl

from .launch import cdiv, channel_block, launch, rows_block

ROWS = 64           # rows per step of the reduction loops
TARGET_PROGRAMS = 1024


def _stats_kernel(x_ptr, mean_ptr, m2_ptr, M, C, rows_per_prog,
                  BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
    """Per program: the mean and centred sum of squares of ``rows_per_prog`` rows.

    Sums are taken around the program's first row (a shift close to the mean), so
    ``s2 - s1**2 / n`` does not cancel the way E[x^2] - E[x]^2 does.
    """
    pid_m = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = cols < C
    row0 = pid_m * rows_per_prog
    row_end = tl.minimum(row0 + rows_per_prog, M)
    shift = tl.load(x_ptr + row0.to(tl.int64) * C + cols, mask=cmask, other=0.0).to(tl.float32)
    s1 = tl.zeros([BLOCK_C], dtype=tl.float32)
    s2 = tl.zeros([BLOCK_C], dtype=tl.float32)
    for start in range(row0, row_end, BLOCK_M):
        rows = start + tl.arange(0, BLOCK_M)
        mask = (rows < row_end)[:, None] & cmask[None, :]
        offs = rows.to(tl.int64)[:, None] * C + cols[None, :]
        v = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        d = tl.where(mask, v - shift[None, :], 0.0)
        s1 += tl.sum(d, axis=0)
        s2 += tl.sum(d * d, axis=0)
    n = (row_end - row0).to(tl.float32)
    out = pid_m * C + cols
    tl.store(mean_ptr + out, shift + s1 / n, mask=cmask)
    tl.store(m2_ptr + out, s2 - s1 * s1 / n, mask=cmask)


def _affine_act_kernel(x_ptr, res_ptr, y_ptr, scale_ptr, shift_ptr, M, C,
                       HAS_RES: tl.constexpr, RELU: tl.constexpr,
                       BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
    """y = act(x * scale + shift [+ residual]): BN (either mode) + add + ReLU in one pass."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = cols < C
    mask = (rows < M)[:, None] & cmask[None, :]
    offs = rows.to(tl.int64)[:, None] * C + cols[None, :]
    scale = tl.load(scale_ptr + cols, mask=cmask, other=0.0)
    shift = tl.load(shift_ptr + cols, mask=cmask, other=0.0)
    v = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32) * scale[None, :] + shift[None, :]
    if HAS_RES:
        v += tl.load(res_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if RELU:
        v = tl.maximum(v, 0.0)
    tl.store(y_ptr + offs, v.to(y_ptr.dtype.element_ty), mask=mask)


def _bwd_reduce_kernel(g_ptr, x_ptr, res_ptr, mean_ptr, scale_ptr, shift_ptr, sg_ptr, sgx_ptr,
                       M, C, rows_per_prog, HAS_RES: tl.constexpr, RELU: tl.constexpr,
                       BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
    """Partial sums of g' and g' * (x - mean), g' = g masked by the recomputed ReLU."""
    pid_m = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = cols < C
    mean = tl.load(mean_ptr + cols, mask=cmask, other=0.0)
    scale = tl.load(scale_ptr + cols, mask=cmask, other=0.0)
    shift = tl.load(shift_ptr + cols, mask=cmask, other=0.0)
    row0 = pid_m * rows_per_prog
    row_end = tl.minimum(row0 + rows_per_prog, M)
    sg = tl.zeros([BLOCK_C], dtype=tl.float32)
    sgx = tl.zeros([BLOCK_C], dtype=tl.float32)
    for start in range(row0, row_end, BLOCK_M):
        rows = start + tl.arange(0, BLOCK_M)
        mask = (rows < row_end)[:, None] & cmask[None, :]
        offs = rows.to(tl.int64)[:, None] * C + cols[None, :]
        g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        if RELU:
            u = x * scale[None, :] + shift[None, :]
            if HAS_RES:
                u += tl.load(res_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            g = tl.where(u > 0.0, g, 0.0)
        sg += tl.sum(g, axis=0)
        sgx += tl.sum(tl.where(mask, g * (x - mean[None, :]), 0.0), axis=0)
    out = pid_m * C + cols
    tl.store(sg_ptr + out, sg, mask=cmask)
    tl.store(sgx_ptr + out, sgx, mask=cmask)


def _bwd_apply_kernel(g_ptr, x_ptr, res_ptr, dx_ptr, dres_ptr, scale_ptr, shift_ptr,
                      k1_ptr, k2_ptr, k3_ptr, M, C, HAS_RES: tl.constexpr, RELU: tl.constexpr,
                      WRITE_DRES: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
    """dx = g' * k1 + x * k2 + k3 per channel (the BN backward in both modes); dres = g'."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = cols < C
    mask = (rows < M)[:, None] & cmask[None, :]
    offs = rows.to(tl.int64)[:, None] * C + cols[None, :]
    g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if RELU:
        scale = tl.load(scale_ptr + cols, mask=cmask, other=0.0)
        shift = tl.load(shift_ptr + cols, mask=cmask, other=0.0)
        u = x * scale[None, :] + shift[None, :]
        if HAS_RES:
            u += tl.load(res_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        g = tl.where(u > 0.0, g, 0.0)
    k1 = tl.load(k1_ptr + cols, mask=cmask, other=0.0)
    k2 = tl.load(k2_ptr + cols, mask=cmask, other=0.0)
    k3 = tl.load(k3_ptr + cols, mask=cmask, other=0.0)
    dx = g * k1[None, :] + x * k2[None, :] + k3[None, :]
    tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=mask)
    if WRITE_DRES:
        tl.store(dres_ptr + offs, g.to(dres_ptr.dtype.element_ty), mask=mask)


def _reduction_split(m: int, c: int, block_c: int) -> tuple[int, int]:
    """(programs along M, rows per program): about TARGET_PROGRAMS programs in all."""
    rows = rows_block(ROWS)
    progs_m = max(1, min(cdiv(m, rows), TARGET_PROGRAMS // cdiv(c, block_c)))
    rows_per_prog = cdiv(cdiv(m, progs_m), rows) * rows
    return cdiv(m, rows_per_prog), rows_per_prog


def _elementwise_blocks(c: int) -> tuple[int, int]:
    block_c = channel_block(c)
    return rows_block(max(16, 4096 // block_c)), block_c


def channel_stats(x2d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-column mean and biased variance of an [M, C] matrix, in float32."""
    m, c = x2d.shape
    block_c = channel_block(c)
    progs, rows_per_prog = _reduction_split(m, c, block_c)
    means = torch.empty(progs, c, device=x2d.device, dtype=torch.float32)
    m2s = torch.empty_like(means)
    launch(_stats_kernel, (progs, cdiv(c, block_c)), x2d, means, m2s, m, c, rows_per_prog,
           BLOCK_M=rows_block(ROWS), BLOCK_C=block_c)
    # Chan et al.: merge the per-program (count, mean, M2) triples
    counts = (m - torch.arange(progs, device=x2d.device) * rows_per_prog).clamp(max=rows_per_prog)
    counts = counts.to(torch.float32)[:, None]
    mean = (counts * means).sum(0) / m
    m2 = (m2s + counts * (means - mean) ** 2).sum(0)
    return mean, m2 / m


def affine_act(x2d: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor,
               res2d: torch.Tensor | None, relu: bool) -> torch.Tensor:
    m, c = x2d.shape
    y = torch.empty_like(x2d)
    block_m, block_c = _elementwise_blocks(c)
    launch(_affine_act_kernel, (cdiv(m, block_m), cdiv(c, block_c)), x2d,
           x2d if res2d is None else res2d, y, scale, shift, m, c, HAS_RES=res2d is not None,
           RELU=relu, BLOCK_M=block_m, BLOCK_C=block_c)
    return y


def backward_sums(g2d: torch.Tensor, x2d: torch.Tensor, res2d: torch.Tensor | None,
                  mean: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor,
                  relu: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum g', sum g' * (x - mean)) per channel, float32."""
    m, c = x2d.shape
    block_c = channel_block(c)
    progs, rows_per_prog = _reduction_split(m, c, block_c)
    sg = torch.empty(progs, c, device=x2d.device, dtype=torch.float32)
    sgx = torch.empty_like(sg)
    launch(_bwd_reduce_kernel, (progs, cdiv(c, block_c)), g2d, x2d,
           x2d if res2d is None else res2d, mean, scale, shift, sg, sgx, m, c, rows_per_prog,
           HAS_RES=res2d is not None, RELU=relu, BLOCK_M=rows_block(ROWS), BLOCK_C=block_c)
    return sg.sum(0), sgx.sum(0)


def backward_apply(g2d: torch.Tensor, x2d: torch.Tensor, res2d: torch.Tensor | None,
                   scale: torch.Tensor, shift: torch.Tensor, k1: torch.Tensor, k2: torch.Tensor,
                   k3: torch.Tensor, relu: bool, write_dres: bool
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
    m, c = x2d.shape
    dx = torch.empty_like(x2d)
    dres = torch.empty_like(g2d) if write_dres else None
    block_m, block_c = _elementwise_blocks(c)
    launch(_bwd_apply_kernel, (cdiv(m, block_m), cdiv(c, block_c)), g2d, x2d,
           x2d if res2d is None else res2d, dx, dx if dres is None else dres, scale, shift,
           k1, k2, k3, m, c, HAS_RES=res2d is not None, RELU=relu, WRITE_DRES=write_dres,
           BLOCK_M=block_m, BLOCK_C=block_c)
    return dx, dres

