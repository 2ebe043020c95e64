"""Triton kernels for BatchNorm on NHWC activations seen as an [M, C] matrix (M = N*H*W).

Forward: per-channel statistics (``channel_stats``), then one pass that applies the affine map
and fuses the ReLU and residual add (``bn_act_forward``). Backward: one reduction pass
(sum of g and of g*(x-mean), with the ReLU mask recomputed from x) and one pass that writes dx
(and the residual's gradient). Statistics accumulate in float32 whatever the activation dtype.
"""

from __future__ import annotations

import torch
import triton.language as tl

from .launch import TARGET_PROGRAMS, cdiv, channel_block, launch, rows_block

ROWS = 64           # rows per step of the reduction loops


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


def _stats_finalize_kernel(means_ptr, m2s_ptr, progs, rows_per_prog, M, C, w_ptr, b_ptr,
                           rm_ptr, rv_ptr, out_ptr, momentum, eps, unbias,
                           HAS_W: tl.constexpr, HAS_B: tl.constexpr, UPDATE: tl.constexpr,
                           BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """Merge the per-program (count, mean, M2) of ``_stats_kernel`` (Chan et al.), then in the
    same launch: invstd, the affine map (scale, shift) and the running-statistics update.
    Writes rows mean, var, invstd, scale, shift of ``out`` ([5, C]). One launch instead of
    the two dozen tiny PyTorch ops it replaces, per BatchNorm per step."""
    c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = c < C
    total = tl.zeros([BLOCK_C], dtype=tl.float32)
    for p0 in range(0, progs, BLOCK_P):
        p = p0 + tl.arange(0, BLOCK_P)
        n = tl.minimum(rows_per_prog, M - p * rows_per_prog).to(tl.float32)
        mask = (p < progs)[:, None] & cmask[None, :]
        mu = tl.load(means_ptr + p[:, None] * C + c[None, :], mask=mask, other=0.0)
        total += tl.sum(tl.where(mask, n[:, None] * mu, 0.0), axis=0)
    mean = total / M
    m2 = tl.zeros([BLOCK_C], dtype=tl.float32)
    for p0 in range(0, progs, BLOCK_P):
        p = p0 + tl.arange(0, BLOCK_P)
        n = tl.minimum(rows_per_prog, M - p * rows_per_prog).to(tl.float32)
        mask = (p < progs)[:, None] & cmask[None, :]
        offs = p[:, None] * C + c[None, :]
        d = tl.load(means_ptr + offs, mask=mask, other=0.0) - mean[None, :]
        part = tl.load(m2s_ptr + offs, mask=mask, other=0.0) + n[:, None] * d * d
        m2 += tl.sum(tl.where(mask, part, 0.0), axis=0)
    var = m2 / M
    invstd = 1.0 / tl.sqrt(var + eps)
    scale = invstd
    if HAS_W:
        scale = scale * tl.load(w_ptr + c, mask=cmask, other=0.0).to(tl.float32)
    shift = -mean * scale
    if HAS_B:
        shift += tl.load(b_ptr + c, mask=cmask, other=0.0).to(tl.float32)
    tl.store(out_ptr + c, mean, mask=cmask)
    tl.store(out_ptr + C + c, var, mask=cmask)
    tl.store(out_ptr + 2 * C + c, invstd, mask=cmask)
    tl.store(out_ptr + 3 * C + c, scale, mask=cmask)
    tl.store(out_ptr + 4 * C + c, shift, mask=cmask)
    if UPDATE:
        rm = tl.load(rm_ptr + c, mask=cmask, other=0.0).to(tl.float32)
        rv = tl.load(rv_ptr + c, mask=cmask, other=0.0).to(tl.float32)
        rm = rm * (1.0 - momentum) + momentum * mean
        rv = rv * (1.0 - momentum) + momentum * var * unbias
        tl.store(rm_ptr + c, rm.to(rm_ptr.dtype.element_ty), mask=cmask)
        tl.store(rv_ptr + c, rv.to(rv_ptr.dtype.element_ty), mask=cmask)


def _bwd_finalize_kernel(sg_ptr, sgx_ptr, progs, M, C, stats_ptr, out_ptr,
                         BATCH: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """Sum the partial (sum g', sum g'(x - mean)) and turn them into the per-channel
    coefficients of dx = g' k1 + x k2 + k3 (k1 = scale) and into dgamma, dbeta.
    ``stats`` holds rows mean, var, invstd, scale, shift; writes rows k2, k3, dgamma, dbeta."""
    c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = c < C
    sg = tl.zeros([BLOCK_C], dtype=tl.float32)
    sgx = tl.zeros([BLOCK_C], dtype=tl.float32)
    for p0 in range(0, progs, BLOCK_P):
        p = p0 + tl.arange(0, BLOCK_P)
        mask = (p < progs)[:, None] & cmask[None, :]
        offs = p[:, None] * C + c[None, :]
        sg += tl.sum(tl.load(sg_ptr + offs, mask=mask, other=0.0), axis=0)
        sgx += tl.sum(tl.load(sgx_ptr + offs, mask=mask, other=0.0), axis=0)
    mean = tl.load(stats_ptr + c, mask=cmask, other=0.0)
    invstd = tl.load(stats_ptr + 2 * C + c, mask=cmask, other=0.0)
    scale = tl.load(stats_ptr + 3 * C + c, mask=cmask, other=0.0)
    if BATCH:  # the batch statistics depend on x: their gradient terms
        k2 = -scale * invstd * invstd * sgx / M
        k3 = -scale * sg / M - k2 * mean
    else:
        k2 = tl.zeros([BLOCK_C], dtype=tl.float32)
        k3 = tl.zeros([BLOCK_C], dtype=tl.float32)
    tl.store(out_ptr + c, k2, mask=cmask)
    tl.store(out_ptr + C + c, k3, mask=cmask)
    tl.store(out_ptr + 2 * C + c, invstd * sgx, mask=cmask)
    tl.store(out_ptr + 3 * C + c, sg, mask=cmask)


FINAL_P = 32  # partial rows per step of the finalize kernels


def _reduction_split(m: int, c: int, block_c: int) -> tuple[int, int]:
    """(programs along M, rows per program): about TARGET_PROGRAMS programs in all."""
    rows = rows_block(ROWS)
    progs_m = max(1, min(cdiv(m, rows), TARGET_PROGRAMS // cdiv(c, block_c)))
    rows_per_prog = cdiv(cdiv(m, progs_m), rows) * rows
    return cdiv(m, rows_per_prog), rows_per_prog


def _elementwise_blocks(c: int) -> tuple[int, int]:
    block_c = channel_block(c)
    return rows_block(max(16, 4096 // block_c)), block_c


def _partial_stats(x2d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    m, c = x2d.shape
    block_c = channel_block(c)
    progs, rows_per_prog = _reduction_split(m, c, block_c)
    means = torch.empty(progs, c, device=x2d.device, dtype=torch.float32)
    m2s = torch.empty_like(means)
    launch(_stats_kernel, (progs, cdiv(c, block_c)), x2d, means, m2s, m, c, rows_per_prog,
           BLOCK_M=rows_block(ROWS), BLOCK_C=block_c)
    return means, m2s, progs, rows_per_prog


def batch_stats(x2d: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                running_mean: torch.Tensor | None, running_var: torch.Tensor | None,
                momentum: float, eps: float) -> torch.Tensor:
    """[5, C] float32 rows mean, var (biased), invstd, scale, shift of the columns of an [M, C]
    matrix under a BatchNorm with ``weight``/``bias``; updates the running statistics (with
    the unbiased variance, as ``nn.BatchNorm2d``) when they are given. Two launches."""
    m, c = x2d.shape
    means, m2s, progs, rows_per_prog = _partial_stats(x2d)
    out = torch.empty(5, c, device=x2d.device, dtype=torch.float32)
    update = running_mean is not None and running_var is not None
    block_c = channel_block(c)
    launch(_stats_finalize_kernel, (cdiv(c, block_c),), means, m2s, progs, rows_per_prog, m, c,
           out if weight is None else weight, out if bias is None else bias,
           running_mean if update else out, running_var if update else out, out,
           float(momentum), float(eps), m / max(m - 1, 1), HAS_W=weight is not None,
           HAS_B=bias is not None, UPDATE=update, BLOCK_P=FINAL_P, BLOCK_C=block_c)
    return out


def channel_stats(x2d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-column mean and biased variance of an [M, C] matrix, in float32."""
    out = batch_stats(x2d, None, None, None, None, 0.0, 1.0)  # eps: only invstd sees it
    return out[0], out[1]


def affine_act(x2d: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor,
               res2d: torch.Tensor | None, relu: bool) -> torch.Tensor:
    m, c = x2d.shape
    y = torch.empty_like(x2d)
    block_m, block_c = _elementwise_blocks(c)
    launch(_affine_act_kernel, (cdiv(m, block_m), cdiv(c, block_c)), x2d,
           x2d if res2d is None else res2d, y, scale, shift, m, c, HAS_RES=res2d is not None,
           RELU=relu, BLOCK_M=block_m, BLOCK_C=block_c)
    return y


def backward_coefficients(g2d: torch.Tensor, x2d: torch.Tensor, res2d: torch.Tensor | None,
                          stats: torch.Tensor, relu: bool, batch: bool) -> torch.Tensor:
    """[4, C] float32 rows k2, k3, dgamma, dbeta of the BN backward (``stats`` as returned by
    ``batch_stats`` or ``running_stats``), g' = g masked by the recomputed ReLU. Two launches."""
    m, c = x2d.shape
    block_c = channel_block(c)
    progs, rows_per_prog = _reduction_split(m, c, block_c)
    sg = torch.empty(progs, c, device=x2d.device, dtype=torch.float32)
    sgx = torch.empty_like(sg)
    launch(_bwd_reduce_kernel, (progs, cdiv(c, block_c)), g2d, x2d,
           x2d if res2d is None else res2d, stats[0], stats[3], stats[4], sg, sgx, m, c,
           rows_per_prog, HAS_RES=res2d is not None, RELU=relu, BLOCK_M=rows_block(ROWS),
           BLOCK_C=block_c)
    return finalize_backward(sg, sgx, m, stats, batch)


def finalize_backward(sg: torch.Tensor, sgx: torch.Tensor, m: int, stats: torch.Tensor,
                      batch: bool) -> torch.Tensor:
    """[4, C] rows k2, k3, dgamma, dbeta from per-program partial sums ([P, C] each) of g' and
    g' * (x - mean) over m rows, wherever they were computed (here, or fused into the
    depthwise-conv and max-pool backward kernels)."""
    progs, c = sg.shape
    block_c = channel_block(c)
    out = torch.empty(4, c, device=sg.device, dtype=torch.float32)
    launch(_bwd_finalize_kernel, (cdiv(c, block_c),), sg, sgx, progs, m, c, stats, out,
           BATCH=batch, BLOCK_P=FINAL_P, BLOCK_C=block_c)
    return out


def backward_apply(g2d: torch.Tensor, x2d: torch.Tensor, res2d: torch.Tensor | None,
                   scale: torch.Tensor, shift: torch.Tensor, k1: torch.Tensor, k2: torch.Tensor,
                   k3: torch.Tensor, relu: bool, write_dres: bool
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """dx (and dres = g') in one pass, from the coefficients of ``backward_coefficients``."""
    m, c = x2d.shape
    dx = torch.empty_like(x2d)
    dres = torch.empty_like(g2d) if write_dres else None
    block_m, block_c = _elementwise_blocks(c)
    launch(_bwd_apply_kernel, (cdiv(m, block_m), cdiv(c, block_c)), g2d, x2d,
           x2d if res2d is None else res2d, dx, dx if dres is None else dres, scale, shift,
           k1, k2, k3, m, c, HAS_RES=res2d is not None, RELU=relu, WRITE_DRES=write_dres,
           BLOCK_M=block_m, BLOCK_C=block_c)
    return dx, dres

