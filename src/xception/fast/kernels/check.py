"""Kernel-vs-PyTorch comparisons shared by the tests (CPU, Triton interpreter) and the GPU check
script (benchmarks/gpu_check.py): every fused op, forward and backward, fp32 and bf16.

Each case builds its modules and inputs, runs the fused op and the unfused PyTorch modules on
copies, and compares the output, every input and parameter gradient and the BatchNorm running
statistics, as ``max|fused - ref| / max|ref|``. The bf16 reference runs in float32 on the same
bf16-rounded inputs, so its tolerance covers bf16 rounding of outputs and intermediates.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ...models.layers import Conv2d, MaxPool2d
from ..optimize import TOLERANCE, relative_error  # the bounds, by dtype, that optimize_for_inference uses
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


def run_case(case: Case, device: torch.device | str, dtype: torch.dtype, training: bool,
             n: int = 2, c: int = 24, size: int = 10, seed: int = 0) -> dict:
    """Compare one case; returns {'errors': {what: relative error}, 'worst', 'ok', ...}."""
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mods = [m.to(device).train(training) for m in case.modules(c)]
    ref_mods = copy.deepcopy(mods)
    base = [torch.randn(s, generator=gen).to(device) for s in case.shapes(n, c, size)]
    fmt = torch.channels_last
    ins = [b.to(dtype).contiguous(memory_format=fmt).requires_grad_(True) for b in base]
    ref_ins = [i.detach().float().requires_grad_(True) for i in ins]
    out = case.run(mods, *ins)
    ref = case.ref(ref_mods, *ref_ins)
    grad = torch.randn(ref.shape, generator=gen).to(device).to(dtype)
    out.backward(grad)
    ref.backward(grad.float())
    errors = {"out": relative_error(out, ref)}
    for k, (a, b) in enumerate(zip(ins, ref_ins, strict=True)):
        errors[f"grad_in{k}"] = relative_error(a.grad, b.grad)
    for (name, p), q in zip(_named_params(mods), (q for _, q in _named_params(ref_mods)),
                            strict=True):
        errors[f"grad_{name}"] = relative_error(p.grad, q.grad)
    for (name, b), r in zip(_named_buffers(mods), (r for _, r in _named_buffers(ref_mods)),
                            strict=True):
        errors[name] = relative_error(b.float(), r.float())
    worst = max(errors.values())
    tol = TOLERANCE[dtype]
    return {"case": case.name, "dtype": str(dtype).replace("torch.", ""), "training": training,
            "errors": errors, "worst": worst, "tolerance": tol, "ok": worst <= tol}


def _named_params(mods: list[nn.Module]):
    return [(f"{i}.{n}", p) for i, m in enumerate(mods) for n, p in m.named_parameters()]


def _named_buffers(mods: list[nn.Module]):
    return [(f"{i}.{n}", b) for i, m in enumerate(mods) for n, b in m.named_buffers()
            if b.is_floating_point()]


def stats_stability(device: torch.device | str, offset: float = 1000.0) -> float:
    """Relative error of the variance of data far from zero (where E[x^2] - E[x]^2 fails)."""
    from .batchnorm import channel_stats

    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(4096, 40, generator=gen) + offset).to(device)
    _, var = channel_stats(x)
    ref = x.double().var(0, unbiased=False)
    return float(((var.double() - ref).abs() / ref).max())
