"""Kernel-vs-PyTorch comparisons shared by the tests (CPU, Triton interpreter) and the GPU check
script (benchmarks/gpu_check.py): every fused op, forward and backward, fp32 and bf16.

Each case builds its modules and inputs, runs the fused op, and compares the output, every input
and parameter gradient and the update of the BatchNorm running statistics with a float64
reference (the same modules in float64 on the same, dtype-rounded, inputs), as
``max|fused - ref| / max|ref|``. Inputs and upstream gradients have per-channel means of up to
two standard deviations and standard deviations from 0.3 to 3, so the BN backward's terms in
the mean are not hidden by zero-mean data (dropped, they are a few 1e-3 there).

fp32: every error at most ``TOLERANCE[float32]``. bf16: at most ``BF16_FACTOR`` times the
larger of PyTorch's own bf16 error on the same op and inputs (its modules under autocast) and
the error of the exact result stored in bf16 as the kernel stores it (``rounded``), floored at
``BF16_FLOOR`` and capped at the old flat ``TOLERANCE[bfloat16]`` (3e-2, which let any dropped
term below 3% through). Under Triton's CPU interpreter, which truncates to bf16 where compiled
Triton rounds to nearest, every bf16 store may be off by twice as much, so PyTorch's error
counts double there.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ...models.layers import Conv2d, MaxPool2d
from ..optimize import TOLERANCE  # the bounds, by dtype, that optimize_for_inference uses
from .ops import batchnorm_act, depthwise_conv, maxpool_add


@dataclass(frozen=True)
class Case:
    name: str
    run: Callable[..., torch.Tensor]          # run(modules, *inputs) with the fused op
    ref: Callable[..., torch.Tensor]          # the same with PyTorch modules
    modules: Callable[[int], list[nn.Module]]
    shapes: Callable[[int, int, int], list[tuple[int, ...]]]   # (n, c, size) -> input shapes


def _bn(c: int) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(c, eps=1e-3, momentum=0.1)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.normal_(0.0, 0.3)
        bn.running_mean.normal_(0.0, 0.3)
        bn.running_var.uniform_(0.5, 2.0)
    return bn


def _same(n: int, c: int, s: int) -> list[tuple[int, ...]]:
    return [(n, c, s, s)]


def _dw(stride: int, padding: str = "tf_same", dilation: int = 1):
    return lambda c: [Conv2d(c, c, 3, stride=stride, dilation=dilation, groups=c,
                             padding=padding)]


def _pooled(s: int, padding: str) -> int:
    return -(-s // 2) if padding == "tf_same" else (s + 2 - 3) // 2 + 1


def _pool_case(name: str, padding: str, bn: bool, res: str | None) -> Case:
    pool = MaxPool2d(3, 2, padding)

    def mods(c):
        return [pool, *( [_bn(c)] if bn else []), *([_bn(c)] if res == "bn" else [])]

    def run(m, x, *r):
        return maxpool_add(x, m[0], m[1] if bn else None, r[0] if r else None,
                           m[-1] if res == "bn" else None)

    def ref(m, x, *r):
        y = m[0](m[1](x) if bn else x)
        if r:
            y = y + (m[-1](r[0]) if res == "bn" else r[0])
        return y

    def shapes(n, c, s):
        out = [(n, c, s, s)]
        if res:
            out.append((n, c, _pooled(s, padding), _pooled(s, padding)))
        return out
    return Case(name, run, ref, mods, shapes)


CASES: list[Case] = [
    Case("bn", lambda m, x: batchnorm_act(x, m[0]), lambda m, x: m[0](x),
         lambda c: [_bn(c)], _same),
    Case("bn_relu", lambda m, x: batchnorm_act(x, m[0], relu=True),
         lambda m, x: torch.relu(m[0](x)), lambda c: [_bn(c)], _same),
    Case("bn_add", lambda m, x, r: batchnorm_act(x, m[0], residual=r),
         lambda m, x, r: m[0](x) + r, lambda c: [_bn(c)], lambda n, c, s: _same(n, c, s) * 2),
    Case("bn_add_relu", lambda m, x, r: batchnorm_act(x, m[0], relu=True, residual=r),
         lambda m, x, r: torch.relu(m[0](x) + r), lambda c: [_bn(c)],
         lambda n, c, s: _same(n, c, s) * 2),
    Case("dw_bn_relu", lambda m, x: depthwise_conv(x, m[0], m[1], relu=True),
         lambda m, x: m[0](torch.relu(m[1](x))), lambda c: _dw(1)(c) + [_bn(c)], _same),
    Case("dw_bn_relu_stride2_tf_same", lambda m, x: depthwise_conv(x, m[0], m[1], relu=True),
         lambda m, x: m[0](torch.relu(m[1](x))), lambda c: _dw(2)(c) + [_bn(c)], _same),
    Case("dw_relu_symmetric_stride2", lambda m, x: depthwise_conv(x, m[0], relu=True),
         lambda m, x: m[0](torch.relu(x)), _dw(2, "symmetric"), _same),
    Case("dw_plain_dilation2", lambda m, x: depthwise_conv(x, m[0]), lambda m, x: m[0](x),
         _dw(1, "tf_same", 2), _same),
    _pool_case("pool_bn_add_bn_tf_same", "tf_same", True, "bn"),
    _pool_case("pool_bn_add_symmetric", "symmetric", True, "plain"),
    _pool_case("pool_plain_tf_same", "tf_same", False, None),
]


# bf16 bounds, see the module docstring. The factor leaves room for another summation order and
# an intermediate stored in bf16, not for a missing term. The floor is for results both compute
# in float32 (BN statistics, parameter gradients), where PyTorch's error is ~1e-7: there the
# kernel is held to the fp32 tolerance, times the factor.
BF16_FACTOR = 2.0
BF16_FLOOR = TOLERANCE[torch.float32]


def error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """max|out - ref| / max|ref| in float64 (0 when both are 0, huge when only ref is 0)."""
    ref = ref.detach().double()
    scale = ref.abs().max().clamp_min(torch.finfo(torch.float32).tiny)
    return float((out.detach().double() - ref).abs().max() / scale)


def case_input(shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    """randn scaled per channel (dim 1) by 0.3..3 (log-uniform), shifted by -2..2 of that scale."""
    c = shape[1]
    view = (1, c) + (1,) * (len(shape) - 2)
    std = torch.empty(c).uniform_(math.log(0.3), math.log(3.0), generator=gen).exp()
    mean = torch.empty(c).uniform_(-2.0, 2.0, generator=gen) * std
    return torch.randn(shape, generator=gen) * std.view(view) + mean.view(view)


def _results(fn: Callable[..., torch.Tensor], mods: list[nn.Module], ins: list[torch.Tensor],
             grad: torch.Tensor, autocast: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Run ``fn`` forward and backward: output, input and parameter gradients, and the change
    of every floating-point buffer (the running-statistics update: compared on its own, it is
    not diluted by the old value)."""
    before = {name: b.detach().clone() for name, b in _named_buffers(mods)}
    device = ins[0].device.type
    with torch.autocast(device, dtype=autocast or torch.bfloat16, enabled=autocast is not None):
        out = fn(mods, *ins)
    out.backward(grad.to(out.dtype))
    res = {"out": out}
    res.update({f"grad_in{k}": i.grad for k, i in enumerate(ins)})
    res.update({f"grad_{name}": p.grad for name, p in _named_params(mods)})
    res.update({name: b.detach() - before[name] for name, b in _named_buffers(mods)})
    res.update({name: b for name, b in _named_buffers(mods, floating=False)})
    return res


def run_case(case: Case, device: torch.device | str, dtype: torch.dtype, training: bool,
             n: int = 2, c: int = 24, size: int = 10, seed: int = 0) -> dict:
    """Compare one case; returns {'errors': {what: relative error}, 'bounds', 'worst', 'ok', ...}
    (bf16 also 'torch_errors', PyTorch's own bf16 errors the bounds derive from)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mods = [m.to(device).train(training) for m in case.modules(c)]
    torch_mods, ref_mods = copy.deepcopy(mods), copy.deepcopy(mods)
    for m in ref_mods:
        m.double()
    base = [case_input(s, gen).to(device) for s in case.shapes(n, c, size)]
    ins = [b.to(dtype).contiguous(memory_format=torch.channels_last) for b in base]
    with torch.no_grad():  # the output's shape, for the upstream gradient
        shape = case.ref(copy.deepcopy(ref_mods), *[i.double() for i in ins]).shape
    grad = case_input(tuple(shape), gen).to(device).to(dtype)

    def leaves(like: torch.dtype) -> list[torch.Tensor]:
        return [i.detach().to(like).requires_grad_(True) for i in ins]

    got = _results(case.run, mods, leaves(dtype), grad)
    ref = _results(case.ref, ref_mods, leaves(torch.float64), grad.double())
    errors = {k: _compare(got[k], ref[k]) for k in ref}
    result = {"case": case.name, "dtype": str(dtype).replace("torch.", ""),
              "training": training, "errors": errors, "tolerance": TOLERANCE[dtype]}
    if dtype == torch.bfloat16:
        theirs = _results(case.ref, torch_mods, leaves(dtype), grad, autocast=torch.bfloat16)
        torch_errors = {k: _compare(theirs[k], ref[k]) for k in ref}
        truncates = ins[0].device.type == "cpu"  # Triton's interpreter, see ``rounded``
        rounding = {k: _compare(rounded(ref[k], got[k].dtype, truncates), ref[k]) for k in ref}
        slack = 2.0 if truncates else 1.0
        bounds = {k: min(TOLERANCE[dtype],
                         BF16_FACTOR * max(slack * torch_errors[k], rounding[k], BF16_FLOOR))
                  for k in ref}
        result["torch_errors"], result["rounding_errors"] = torch_errors, rounding
    else:
        bounds = dict.fromkeys(errors, TOLERANCE[dtype])
    result["bounds"] = bounds
    result["worst"] = max(errors.values())
    result["worst_vs_bound"] = max(errors[k] / bounds[k] for k in errors)
    result["ok"] = all(errors[k] <= bounds[k] for k in errors)
    return result


def rounded(ref: torch.Tensor, dtype: torch.dtype, truncate: bool) -> torch.Tensor:
    """The exact result stored as the kernel stores it: ``dtype``, rounded to nearest as compiled
    Triton does, or truncated (toward zero) to bf16 as Triton's CPU interpreter does (3.x: its
    float32 -> bfloat16 cast drops the low 16 bits), up to twice PyTorch's rounding error."""
    if not ref.is_floating_point():
        return ref
    if truncate and dtype == torch.bfloat16:
        bits = ref.detach().float().view(torch.int32) & -65536
        return bits.view(torch.float32).to(dtype)
    return ref.detach().to(dtype)


def _compare(out: torch.Tensor, ref: torch.Tensor) -> float:
    """``error`` for floating-point results; integer buffers (the BN step counter) must be equal."""
    if not ref.is_floating_point():
        return 0.0 if torch.equal(out.cpu(), ref.cpu()) else math.inf
    return error(out, ref)


def _named_params(mods: list[nn.Module]):
    return [(f"{i}.{n}", p) for i, m in enumerate(mods) for n, p in m.named_parameters()]


def _named_buffers(mods: list[nn.Module], floating: bool = True):
    return [(f"{i}.{n}", b) for i, m in enumerate(mods) for n, b in m.named_buffers()
            if b.is_floating_point() == floating]


def stats_stability(device: torch.device | str, offset: float = 1000.0) -> float:
    """Relative error of the variance of data far from zero (where E[x^2] - E[x]^2 fails)."""
    from .batchnorm import channel_stats

    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(4096, 40, generator=gen) + offset).to(device)
    _, var = channel_stats(x)
    ref = x.double().var(0, unbiased=False)
    return float(((var.double() - ref).abs() / ref).max())
