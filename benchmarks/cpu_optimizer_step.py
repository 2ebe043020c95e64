"""The optimizer step alone on CPU: PyTorch's multi-tensor SGD against its fused SGD.

fit's setting (momentum 0.9, Nesterov, weight decay 5e-4) on the parameters of ``xception_small``
and ``xception_tiny`` with random gradients; the two alternate in 6 rounds of 20 steps, median
per round, in one process:

    python benchmarks/cpu_optimizer_step.py --out benchmarks/results/cpu/optimizer_step.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
from cpu_small_map_paths import median_ms  # this folder is on the path when run as a script
from cpu_train_speed import machine

from xception.allocator import keep_freed_memory
from xception.models import create_model

KERNELS = {"foreach": {"foreach": True}, "fused": {"fused": True}}


def measure(name: str, rounds: int, steps: int) -> dict:
    params = list(create_model(name, num_classes=10).parameters())
    for p in params:
        p.grad = torch.randn_like(p)
    opts = {k: torch.optim.SGD(params, lr=1e-4, momentum=0.9, nesterov=True, weight_decay=5e-4,
                               **kw) for k, kw in KERNELS.items()}
    per_round: dict[str, list[float]] = {k: [] for k in opts}
    for _ in range(rounds):
        for k, opt in opts.items():
            per_round[k].append(median_ms(opt.step, steps, warm=0))
    return {"parameters": sum(p.numel() for p in params), "ms_per_round": per_round,
            "median_ms": {k: statistics.median(v) for k, v in per_round.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    keep_freed_memory()
    out = {"command": "python benchmarks/cpu_optimizer_step.py", "threads": a.threads,
           "machine": machine(),
           "models": {m: measure(m, a.rounds, a.steps) for m in ("xception_small", "xception_tiny")}}
    text = json.dumps(out, indent=1)
    print(text)
    if a.out:
        a.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
