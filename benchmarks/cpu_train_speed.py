"""CPU training speed of two versions of the package, side by side in one run.

Each version's own ``run_benchmark`` (what ``xception benchmark --modes train`` runs: forward,
backward, optimizer step on a fixed batch) times a training step of ``xception_small`` (32 px,
batch 64, 10 classes), of ``xception_tiny``'s widths on it ("budget", 32 px) and of the
Fashion-MNIST experiments' half-width model ("fashion_budget", 28 px; ``experiments/budget.py``):
the same block structure, narrower. Every measurement is a fresh process; the versions alternate within
each round (and which goes first alternates between rounds), so a change of machine load hits
both alike. Reported: the median of the per-process medians, and the ratio new/old per round.

    python benchmarks/cpu_train_speed.py --old 44ce492 --rounds 5 \
        --out benchmarks/results/cpu_train_speed.json

``--old`` is any git revision (checked out into a temporary worktree); ``--new`` defaults to
this working tree. Run it on a quiet machine: the numbers are only comparable within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the experiments' budget model (experiments/budget.py), spelled out so both versions build it
BUDGET = {"stem_channels": (16, 16), "entry_channels": (32, 64, 128), "middle_channels": 128,
          "middle_repeats": 8, "exit_channels": (128, 256), "final_channels": (256, 256)}
# the Fashion-MNIST experiments' model (experiments/budget.py FASHION_WIDTHS), at their 28 px
FASHION = {**BUDGET, "stem_channels": (8, 8), "entry_channels": (16, 32, 64),
           "middle_channels": 64, "exit_channels": (64, 128), "final_channels": (128, 128)}
MODELS = {"xception_small": ({}, 32), "budget": (BUDGET, 32), "fashion_budget": (FASHION, 28)}


def worker(model: str, batch: int, reps: int, threads: int, with_profile: bool = True) -> None:
    """In a fresh process with one version on the path: its benchmark's training step (and, unless
    ``with_profile`` is False, a profile of it and one digits epoch through the loader)."""
    from dataclasses import replace

    import xception
    from xception.bench.timing import BenchSettings, run_benchmark
    from xception.models import registry

    for name, (overrides, _) in MODELS.items():
        registry._CONFIGS.setdefault(name, replace(registry._CONFIGS["xception_small"], **overrides))
    size = MODELS[model][1]
    s = BenchSettings(model=model, device="cpu", image_size=size, num_classes=10, batch=batch,
                      reps=reps, warmup=3, modes=("train",), contenders=("ours",),
                      threads=threads)
    out = run_benchmark(s, log=lambda *_: None)
    entry = out["results"]["train"]["ours"]
    got = {"median_ms": entry["median_ms"], "times_ms": entry["times_ms"],
           "version_file": xception.__file__}
    if with_profile:
        got.update(profile_ms=profile(model, batch, size), data_epoch_ms=data_epoch_ms())
    print(json.dumps(got))


KINDS = (("depthwise conv", "dw"), ("pointwise conv", "pw"), ("other conv", "conv"),
         ("batchnorm", "batch_norm"), ("max-pool", "max_pool"), ("optimizer", "Optimizer"))


def profile(model: str, batch: int, size: int, steps: int = 3) -> dict[str, float]:
    """Self CPU time per training step by kind of op (torch.profiler, after the timed steps)."""
    import torch
    import torch.nn.functional as F
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from xception.models.registry import create_model

    net = create_model(model, num_classes=10).to(memory_format=torch.channels_last).train()
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))
    try:  # this version's update kernel, as its fit uses it; older versions: the loop
        from xception.training.optimizers import update_kernel
        kernel = update_kernel(list(net.parameters()), True)
    except ImportError:
        kernel = {}
    opt = torch.optim.SGD(net.parameters(), lr=1e-4, momentum=0.9, **kernel)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        opt.step()

    for _ in range(2):
        step()
    with torch_profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(steps):
            step()
    out: dict[str, float] = {}
    for ev in prof.key_averages(group_by_input_shape=True):
        out[_kind(ev.key, ev.input_shapes)] = out.get(_kind(ev.key, ev.input_shapes), 0.0) + \
            ev.self_cpu_time_total / 1e3 / steps
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def _kind(name: str, shapes: list) -> str:
    if name in ("aten::mkldnn_convolution", "aten::convolution_backward", "aten::_convolution",
                "aten::convolution", "aten::conv2d") or "DepthwiseConv" in name:
        weight = shapes[2] if name == "aten::convolution_backward" and len(shapes) > 2 else \
            shapes[1] if len(shapes) > 1 else []
        part = "backward" if "backward" in name.lower() else "forward"
        if len(weight) == 4 and weight[1] == 1 and weight[2] > 1:
            return f"depthwise conv {part}"
        if len(weight) == 4 and weight[2] == 1 and weight[3] == 1:
            return f"pointwise conv {part}"
        return f"other conv {part}"
    if name in ("aten::mm", "aten::addmm", "aten::linear", "aten::matmul"):
        return "pointwise conv as matrix product (fwd + bwd)"  # models/small_maps.py
    if "batch_norm" in name:
        return "batchnorm " + ("backward" if "backward" in name else "forward")
    if "max_pool" in name:
        return "max-pool"
    if name.startswith("Optimizer") or "_foreach" in name or "_fused_sgd" in name:
        return "optimizer"
    if name in ("aten::threshold_backward", "aten::relu", "aten::relu_", "aten::clamp_min",
                "aten::clamp_min_", "aten::add", "aten::add_", "aten::mul", "aten::mul_"):
        return "elementwise (relu, add)"
    if name in ("aten::fill_", "aten::copy_", "aten::zero_", "aten::constant_pad_nd", "aten::empty",
                "aten::empty_strided", "aten::zeros", "aten::zeros_like", "aten::ones_like"):
        return "fill, copy, pad, allocation"
    return "other"


def data_epoch_ms() -> float:
    """One epoch of the augmented digits through the loader, as a training run reads them."""
    import time

    from xception.data import TrainBatches, build_datasets, make_loader
    try:
        from xception.config import RunConfig
    except ImportError:  # a checkout from before the config package (the --old side)
        from xception.training.config import RunConfig

    train, _, _ = build_datasets(RunConfig().data, 0)
    sampler = TrainBatches(len(train), 64, seed=0)
    sampler.set_epoch(1)
    t0 = time.perf_counter()
    for _ in make_loader(train, 64, batch_sampler=sampler):
        pass
    return (time.perf_counter() - t0) * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--old", required=True, help="git revision of the previous version")
    p.add_argument("--new", default="", help="git revision of the new version (default: this tree)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--reps", type=int, default=7, help="timed steps per process")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--out", default="")
    p.add_argument("--worker", default="", help=argparse.SUPPRESS)
    p.add_argument("--no-profile", action="store_true", help=argparse.SUPPRESS)  # worker only
    a = p.parse_args()
    if a.worker:
        worker(a.worker, a.batch, a.reps, a.threads, not a.no_profile)
        return
    with tempfile.TemporaryDirectory() as tmp:
        trees = {}
        for label, rev in (("old", a.old), ("new", a.new)):
            if not rev:
                trees[label] = ROOT
                continue
            path = Path(tmp) / label
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), rev],
                           check=True, capture_output=True)
            trees[label] = path
        try:
            result = measure(a, trees)
        finally:
            for path in trees.values():
                if path != ROOT:
                    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                                    str(path)], check=False, capture_output=True)
    text = json.dumps(result, indent=2)
    print(text)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(text + "\n")


def run_worker(tree: Path, model: str, batch: int, reps: int, threads: int,
               with_profile: bool = True) -> dict:
    """``worker`` in a fresh process with the version at ``tree`` on the path; its JSON line."""
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    cmd = [sys.executable, __file__, "--worker", model, "--batch", str(batch), "--reps", str(reps),
           "--threads", str(threads), "--old", "-", *([] if with_profile else ["--no-profile"])]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert str(tree) in got["version_file"], got["version_file"]
    return got


def measure(a: argparse.Namespace, trees: dict[str, Path]) -> dict:
    models = a.models.split(",")
    runs: dict[str, dict[str, list[float]]] = {m: {"old": [], "new": []} for m in models}
    profiles: dict[str, dict[str, dict[str, float]]] = {}
    data_ms: dict[str, list[float]] = {"old": [], "new": []}
    for r in range(a.rounds):
        order = ["old", "new"] if r % 2 == 0 else ["new", "old"]
        for model in models:
            for label in order:
                got = run_worker(trees[label], model, a.batch, a.reps, a.threads)
                runs[model][label].append(got["median_ms"])
                profiles.setdefault(model, {})[label] = got["profile_ms"]  # the last round's
                data_ms[label].append(got["data_epoch_ms"])
                print(f"round {r + 1}/{a.rounds} {model:15s} {label}: {got['median_ms']:7.1f} ms",
                      file=sys.stderr)
    summary = {}
    for model, by in runs.items():
        old, new = statistics.median(by["old"]), statistics.median(by["new"])
        per_round = [o / n for o, n in zip(by["old"], by["new"], strict=True)]
        summary[model] = {
            "old_ms": old, "new_ms": new,
            "old_img_per_s": a.batch * 1000 / old, "new_img_per_s": a.batch * 1000 / new,
            "speedup": old / new, "speedup_per_round": per_round,
            "speedup_min": min(per_round), "speedup_max": max(per_round),
            "old_ms_per_round": by["old"], "new_ms_per_round": by["new"]}
    return {"command": " ".join(sys.argv), "old": a.old, "new": a.new or "working tree",
            "batch": a.batch, "threads": a.threads, "rounds": a.rounds, "reps": a.reps,
            "machine": machine(),
            "models": summary, "profile_ms_per_step": profiles,
            "digits_epoch_ms": {k: statistics.median(v) for k, v in data_ms.items()}}


def machine() -> dict[str, object]:
    """CPU (name, family/model, whether it has AVX-512), cores, Python and torch versions: a
    KVM guest's "AMD EPYC" alone does not tell an AVX2 host from an AVX-512 one."""
    import torch

    cpu: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            cpu.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return {"cpu": cpu.get("model name", platform.processor()),
            "cpu_family_model": f"{cpu.get('cpu family', '?')}/{cpu.get('model', '?')}",
            "avx512f": "avx512f" in cpu.get("flags", "").split(), "cores": os.cpu_count(),
            "python": platform.python_version(), "torch": torch.__version__}


if __name__ == "__main__":
    main()
