"""The floor under a CPU training step: its convs, BatchNorms and ReLUs at the fastest kernel at hand.

Issue 12 asked for 2x the previous release's CPU training images/s without changing the function
computed. This measures how far PyTorch's kernels allow that on the machine it runs on. For every
convolution of the model at its training shapes it times the forward, the input gradient and the
weight gradient, each alone and each at the fastest of the kernels available: oneDNN's convolution;
for a 1x1 conv also a matrix product on the NHWC view (``models/small_maps.py``); for a depthwise
conv also the tap-by-tap weight gradient. For every BatchNorm it times the forward and backward
kernels, for every ReLU its forward and backward. Their sum leaves out the residual adds, the
pooling, the loss, the optimizer and all autograd and Python overhead, so with these kernels a
step cannot be faster than it. A fused BatchNorm+ReLU kernel (a compiled extension) could go below
the BatchNorm and ReLU part; the conv part is reported on its own for that reason.

Each round times the previous release's step and this version's (each its own ``run_benchmark``
in a fresh process, as ``cpu_train_speed.py``; order alternating), then every kernel (median of
``--calls`` calls); a kernel counts at its fastest round, the steps at their median over rounds.
It also times this version's step on one image: next to no arithmetic, so mostly the per-op
dispatch and autograd cost that the floor leaves out.

    python benchmarks/cpu_step_floor.py --old 44ce492 --rounds 3 \
        --out benchmarks/results/cpu/step_floor.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from cpu_small_map_paths import median_ms
from cpu_train_speed import MODELS, ROOT, machine, run_worker
from torch.utils._python_dispatch import TorchDispatchMode

from xception.allocator import keep_freed_memory
from xception.models import create_model
from xception.models.small_maps import tap_weight_grad

aten = torch.ops.aten


class _Record(TorchDispatchMode):
    """Every convolution, BatchNorm and ReLU a forward pass runs, with the shapes it runs at."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        name = func.overloadpacket.__name__
        if name == "convolution":
            x, w, _, stride, padding, dilation, _, _, groups = args
            self.calls.append(("conv", tuple(x.shape), tuple(w.shape), tuple(stride),
                               tuple(padding), tuple(dilation), groups))
        elif "batch_norm" in name:
            self.calls.append(("batchnorm", tuple(args[0].shape)))
        elif name in ("relu", "relu_"):
            self.calls.append(("relu", tuple(args[0].shape)))
        return func(*args, **(kwargs or {}))


def model_ops(model: str, batch: int) -> tuple[Counter, int]:
    """The model's ops at ``batch`` (convs as oneDNN runs them) and its image size."""
    overrides, size = MODELS[model]
    net = create_model("xception_small", num_classes=10, **overrides).train()
    net = net.to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), _Record() as rec:  # no grad: every conv takes the oneDNN path
        net(x)
    return Counter(rec.calls), size


def _cl(*shape: int) -> torch.Tensor:
    return torch.randn(*shape).contiguous(memory_format=torch.channels_last)


def conv_kernels(op: tuple) -> dict[str, dict[str, Callable[[], object]]]:
    """For one conv: the candidate kernels of its forward, input gradient and weight gradient."""
    _, xs, ws, stride, padding, dilation, groups = op
    x, w = _cl(*xs), torch.randn(*ws)
    g = torch.randn_like(F.conv2d(x, w, None, stride, padding, dilation, groups))

    def backward(mask: list[bool]) -> Callable[[], object]:
        return lambda: aten.convolution_backward(g, x, w, None, list(stride), list(padding),
                                                 list(dilation), False, [0, 0], groups, mask)

    parts = {"forward": {"conv": lambda: F.conv2d(x, w, None, stride, padding, dilation, groups)},
             "input grad": {"conv": backward([True, False, False])},
             "weight grad": {"conv": backward([False, True, False])}}
    if xs[1] == 3:  # the stem's first conv: autograd takes no gradient of the image
        del parts["input grad"]
    if ws[2:] == (1, 1) and groups == 1 and stride == (1, 1) and padding == (0, 0):
        x2, g2, w2 = x.permute(0, 2, 3, 1).reshape(-1, xs[1]), \
            g.permute(0, 2, 3, 1).reshape(-1, ws[0]), w.flatten(1)
        parts["forward"]["matrix product"] = lambda: x2 @ w2.t()
        parts["input grad"]["matrix product"] = lambda: g2 @ w2
        parts["weight grad"]["matrix product"] = lambda: g2.t() @ x2
    if groups > 1 and groups == xs[1]:
        parts["weight grad"]["tap by tap"] = lambda: tap_weight_grad(g, x, w.shape, stride,
                                                                     padding, dilation)
    return parts


def bn_kernels(xs: tuple) -> dict[str, Callable[[], object]]:
    c = xs[1]
    x, g, w, b = _cl(*xs), _cl(*xs), torch.ones(c), torch.zeros(c)
    rm, rv = torch.zeros(c), torch.ones(c)
    _, mean, invstd = aten.native_batch_norm(x, w, b, rm, rv, True, 0.1, 1e-3)
    return {"forward": lambda: aten.native_batch_norm(x, w, b, rm, rv, True, 0.1, 1e-3),
            "backward": lambda: aten.native_batch_norm_backward(
                g, x, w, rm, rv, mean, invstd, True, 1e-3, [True, True, True])}


def relu_kernels(xs: tuple) -> dict[str, Callable[[], object]]:
    x, g = _cl(*xs), _cl(*xs)
    y = torch.relu(x)
    return {"forward": lambda: torch.relu(x), "backward": lambda: aten.threshold_backward(g, y, 0)}


def conv_flop(op: tuple) -> float:
    """Multiply-adds x 2 of one pass (forward, or either gradient) of a conv."""
    _, xs, ws, stride, padding, dilation, groups = op
    ho = (xs[2] + 2 * padding[0] - dilation[0] * (ws[2] - 1) - 1) // stride[0] + 1
    wo = (xs[3] + 2 * padding[1] - dilation[1] * (ws[3] - 1) - 1) // stride[1] + 1
    return 2.0 * xs[0] * ws[0] * ho * wo * ws[1] * ws[2] * ws[3]


def conv_kind(op: tuple) -> str:
    ws, groups = op[2], op[6]
    if groups > 1:
        return "depthwise conv"
    return "pointwise conv" if ws[2:] == (1, 1) else "other conv"


def _key(op: tuple) -> str:
    return json.dumps([str(v) for v in op])


def time_kernels(ops: Counter, calls: int) -> dict[str, dict[str, dict[str, float]]]:
    """One round: median ms of every candidate kernel of every distinct op (op -> part -> kernel)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for op in ops:
        if op[0] == "conv":
            parts = conv_kernels(op)
        else:
            kernels = bn_kernels(op[1]) if op[0] == "batchnorm" else relu_kernels(op[1])
            parts = {part: {"aten": fn} for part, fn in kernels.items()}
        out[_key(op)] = {part: {cand: median_ms(fn, calls) for cand, fn in cands.items()}
                         for part, cands in parts.items()}
    return out


def floor(ops: Counter, rounds: list[dict]) -> dict:
    """Per op and part, the fastest kernel at its fastest round; summed by kind of op."""
    by_kind: dict[str, float] = {}
    chosen: Counter = Counter()
    conv_gflop = 0.0
    for op, count in ops.items():
        kind = conv_kind(op) if op[0] == "conv" else op[0]
        for part, cands in rounds[0][_key(op)].items():
            ms, cand = min((min(r[_key(op)][part][c] for r in rounds), c) for c in cands)
            by_kind[kind] = by_kind.get(kind, 0.0) + ms * count
            chosen[f"{kind} {part}: {cand}"] += count
            if op[0] == "conv":
                conv_gflop += conv_flop(op) * count / 1e9
    conv_ms = sum(v for k, v in by_kind.items() if k.endswith("conv"))
    return {"by_kind_ms": by_kind, "conv_ms": conv_ms, "total_ms": sum(by_kind.values()),
            "conv_gflop": conv_gflop, "conv_gflop_per_s": conv_gflop / conv_ms * 1e3,
            "fastest_kernel_counts": dict(chosen)}


def sgemm_gflop_per_s(calls: int) -> float:
    """The machine's fp32 matrix-product rate on a large square product, for scale."""
    a, b = torch.randn(2048, 1024), torch.randn(1024, 1024)
    return 2 * 2048 * 1024 * 1024 / median_ms(lambda: a @ b, calls) / 1e6


def step_ms(tree: Path, model: str, batch: int, reps: int, threads: int) -> float:
    """A training step of the version at ``tree``, as cpu_train_speed.py times it (fresh process)."""
    return run_worker(tree, model, batch, reps, threads, with_profile=False)["median_ms"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--old", required=True, help="git revision of the previous release")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--calls", type=int, default=15, help="timed calls per kernel per round")
    p.add_argument("--reps", type=int, default=7, help="timed steps per step process")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--out", default="")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    keep_freed_memory()  # as fit and run_benchmark do
    result = {"command": " ".join(sys.argv), "old": a.old, "batch": a.batch,
              "threads": a.threads, "rounds": a.rounds, "calls": a.calls, "machine": machine(),
              "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        old_tree = Path(tmp) / "old"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(old_tree),
                        a.old], check=True, capture_output=True)
        try:
            for model in a.models.split(","):
                result["models"][model] = measure(model, a, old_tree)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                            str(old_tree)], check=False, capture_output=True)
    result["sgemm_gflop_per_s"] = sgemm_gflop_per_s(a.calls)
    text = json.dumps(result, indent=2)
    print(text)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(text + "\n")


def measure(model: str, a: argparse.Namespace, old_tree: Path) -> dict:
    ops, _ = model_ops(model, a.batch)
    steps: dict[str, list[float]] = {"old": [], "new": [], "new_batch1": []}
    rounds = []
    for r in range(a.rounds):
        for label in (["old", "new"] if r % 2 == 0 else ["new", "old"]):
            tree = old_tree if label == "old" else ROOT
            steps[label].append(step_ms(tree, model, a.batch, a.reps, a.threads))
        # one image: next to no arithmetic, so mostly the per-op cost the floor leaves out
        steps["new_batch1"].append(step_ms(ROOT, model, 1, a.reps, a.threads))
        rounds.append(time_kernels(ops, a.calls))
        print(f"round {r + 1}/{a.rounds} {model}: old {steps['old'][-1]:.1f} ms, new "
              f"{steps['new'][-1]:.1f} ms", file=sys.stderr)
    fl = floor(ops, rounds)
    old, new = statistics.median(steps["old"]), statistics.median(steps["new"])
    return {"step_ms": steps, "old_ms": old, "new_ms": new, "floor": fl,
            "new_batch1_ms": statistics.median(steps["new_batch1"]),
            "speedup_now": old / new, "speedup_if_step_were_floor": old / fl["total_ms"],
            "speedup_if_step_were_convs_only": old / fl["conv_ms"],
            "ops": {_key(op): n for op, n in ops.items()}, "kernel_ms_per_round": rounds}


if __name__ == "__main__":
    main()
