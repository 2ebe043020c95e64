"""The CPU small-map paths of ``models/small_maps.py``, measured where they act, in one process.

1. ``ab``: a whole training step (forward, backward, SGD) with the 1x1 matrix path on and off,
   alternating every ``--steps`` steps for ``--rounds`` rounds; median step time of each.
2. ``pointwise``: forward + backward of one 1x1 conv as oneDNN's conv and as ``F.linear`` on the
   NHWC view, for the shapes the models train at (median of 3 x 60 calls, interleaved).
3. ``batchnorm``: BatchNorm's backward kernel on the largest maps of the narrow models, a
   backward written with matrix-product reductions (tried, not used), and a ReLU on the same
   tensor for scale.

    python benchmarks/cpu_small_map_paths.py --out benchmarks/results/cpu/small_map_paths.json

Run it on a quiet machine; only the ratios within one run mean anything on a shared host.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

import xception.models.layers as layers
from xception.allocator import keep_freed_memory
from xception.experiments import budget
from xception.models import create_model

MODELS = {"xception_small": ("xception_small", {}, 3, 32),
          "budget": (budget.MODEL, budget.MODEL_OVERRIDES, 3, 32),  # as cpu_train_speed.py's
          "xception_tiny": ("xception_tiny", {}, 1, 28)}
POINTWISE = [(64, 128, 3, 128), (64, 256, 2, 256), (64, 256, 4, 256), (64, 128, 4, 128),
             (64, 64, 4, 64), (64, 256, 8, 256), (64, 64, 12, 64), (64, 32, 24, 32)]
BATCHNORM = [(64, 32, 32, 32), (64, 32, 24, 24), (64, 128, 4, 4)]


def median_ms(fn: Callable[[], object], n: int, warm: int = 3) -> float:
    for _ in range(warm):
        fn()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def ab(rounds: int, steps: int) -> dict:
    """Whole training steps with the matrix path on and off, alternating in one process."""
    out = {}
    for label, spec in MODELS.items():
        out[label] = _ab_model(*spec, rounds, steps)
        print(f"ab {label}: {out[label]['on_over_off']:.2f}", file=sys.stderr)
    return out


def _ab_model(name: str, overrides: dict, chans: int, size: int, rounds: int, steps: int) -> dict:
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, in_chans=chans, **overrides)
    model = model.to(memory_format=torch.channels_last).train()
    x = torch.randn(64, chans, size, size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (64,))
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9, foreach=True)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    real = layers.needs_matmul_path
    runs: dict[str, list[float]] = {"on": [], "off": []}
    try:
        for _ in range(rounds):
            for mode in ("on", "off"):
                layers.needs_matmul_path = real if mode == "on" else (lambda *a: False)
                runs[mode].append(median_ms(step, steps, warm=2))
    finally:
        layers.needs_matmul_path = real
    on, off = statistics.median(runs["on"]), statistics.median(runs["off"])
    return {"image_size": size, "on_ms": on, "off_ms": off, "on_over_off": on / off,
            "on_ms_per_round": runs["on"], "off_ms_per_round": runs["off"]}


def pointwise() -> dict:
    out = {}
    for n, c, hw, co in POINTWISE:
        key = f"{n}x{c}x{hw}x{hw}->{co}"
        out[key] = _pointwise_shape(n, c, hw, co)
        print(f"pointwise {key}: {out[key]['matmul_over_conv']:.2f}", file=sys.stderr)
    return out


def _pointwise_shape(n: int, c: int, hw: int, co: int) -> dict:
    x = torch.randn(n, c, hw, hw).contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    w = torch.randn(co, c, 1, 1, requires_grad=True)
    g = torch.randn(n, co, hw, hw).contiguous(memory_format=torch.channels_last)

    def conv() -> None:
        F.conv2d(x, w).backward(g)

    def matmul() -> None:
        F.linear(x.permute(0, 2, 3, 1), w.flatten(1)).permute(0, 3, 1, 2).backward(g)

    conv_ms, matmul_ms = [], []
    for _ in range(3):
        conv_ms.append(median_ms(conv, 60))
        matmul_ms.append(median_ms(matmul, 60))
    c_ms, m_ms = statistics.median(conv_ms), statistics.median(matmul_ms)
    return {"conv_ms": c_ms, "matmul_ms": m_ms, "matmul_over_conv": m_ms / c_ms}


def batchnorm() -> dict:
    out = {}
    for shape in BATCHNORM:
        key = "x".join(map(str, shape))
        out[key] = _batchnorm_shape(shape)
        print(f"batchnorm {key}: {out[key]}", file=sys.stderr)
    return out


def _batchnorm_shape(shape: tuple[int, int, int, int]) -> dict:
    n, c, h, w_ = shape
    m = n * h * w_
    x = torch.randn(shape).contiguous(memory_format=torch.channels_last)
    g = torch.randn(shape).contiguous(memory_format=torch.channels_last)
    weight, bias = torch.rand(c) + 0.5, torch.randn(c)
    _, mean, invstd = torch.ops.aten.native_batch_norm(x, weight, bias, None, None, True, 0.1,
                                                        1e-3)[:3]
    ones = torch.ones(1, m)

    def native() -> tuple:
        return torch.ops.aten.native_batch_norm_backward(
            g, x, weight, None, None, mean, invstd, True, 1e-3, [True, True, True])

    def reductions() -> tuple:  # the same gradients from GEMV reductions (tried, not used)
        g2, x2 = g.permute(0, 2, 3, 1).reshape(m, c), x.permute(0, 2, 3, 1).reshape(m, c)
        sum_g = (ones @ g2)[0]
        sum_gxhat = ((ones @ (g2 * x2))[0] - mean * sum_g) * invstd
        a = weight * invstd
        b = -a * invstd * sum_gxhat / m
        dx = torch.addcmul(-a * sum_g / m - b * mean, x2, b).addcmul_(g2, a)
        return dx.view(n, h, w_, c).permute(0, 3, 1, 2), sum_gxhat, sum_g

    rel = max(float((r - q).abs().max() / r.abs().max())
              for r, q in zip(native(), reductions(), strict=True))
    return {"native_backward_ms": median_ms(native, 30),
            "reductions_backward_ms": median_ms(reductions, 30),
            "relu_ms": median_ms(lambda: torch.relu(x), 30), "reductions_max_rel_error": rel}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--steps", type=int, default=5, help="timed steps per mode and round")
    p.add_argument("--out", default="")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    keep_freed_memory()
    result = {"command": " ".join(sys.argv), "threads": a.threads,
              "machine": {"processor": platform.processor(), "python": platform.python_version(),
                          "torch": torch.__version__},
              "ab_matmul_path": ab(a.rounds, a.steps), "pointwise": pointwise(),
              "batchnorm": batchnorm()}
    text = json.dumps(result, indent=2)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
