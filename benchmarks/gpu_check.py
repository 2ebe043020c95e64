"""Everything the GPU side owes, in one call on one GPU: kernel correctness, then timings.

    bash benchmarks/gpu_check.sh            # on the GPU machine; writes $OUT/gpu_check.json
    python benchmarks/gpu_check.py --dry-run  # here, on CPU: Triton interpreter, tiny shapes

Order (each section is written to the JSON as soon as it ends, so a timeout keeps the rest):
1. every fused op vs PyTorch, forward and backward, fp32 and bf16, training and eval mode, at
   Xception's own shapes; BN statistics far from zero;
2. the whole paper model, fused vs unfused, one training step (fp32, and bf16 autocast);
   ``optimize_for_inference`` vs the eval-mode model;
3. timings, bf16 autocast + channels_last, training at batch 128 and inference at batch 256
   and 1: eager, then CUDA graphs, then activation checkpointing (memory), then torch.compile
   while the time budget lasts. Contenders: ours, ours_opt, ours_fused, timm's legacy_xception
   (if importable: installed, or a wheel in benchmarks/wheels/), torchvision's inception_v3.
Only torch, torchvision and triton are needed on the GPU machine: the package imports
safetensors only where weights are read or written, which this script never does.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=os.environ.get("OUT", str(ROOT / "benchmarks" / "out")))
    p.add_argument("--dry-run", action="store_true",
                   help="CPU, Triton interpreter, tiny shapes: checks this script runs")
    p.add_argument("--budget-s", type=float, default=360.0,
                   help="no new timing section starts after this many seconds")
    p.add_argument("--train-batch", type=int, default=128)
    p.add_argument("--infer-batch", type=int, default=256)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--iters", type=int, default=10)
    return p.parse_args()


def _prepare_imports(dry_run: bool) -> None:
    """Interpreter flag before triton loads; package path; optional timm wheel."""
    if dry_run:
        os.environ.setdefault("TRITON_INTERPRET", "1")
    sys.path.insert(0, str(ROOT / "src"))
    try:
        import timm  # noqa: F401
    except ImportError:
        wheels = sorted(glob.glob(str(ROOT / "benchmarks" / "wheels" / "timm-*.whl")))
        if wheels:
            sys.path.insert(0, wheels[-1])  # a pure-Python wheel imports straight from the zip


class Report:
    def __init__(self, out_dir: str) -> None:
        self.path = Path(out_dir) / "gpu_check.json"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.data: dict = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "sections": {}}
        self.t0 = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def section(self, name: str, fn, *args) -> object:
        print(f"== {name} (t={self.elapsed():.0f}s)", flush=True)
        t = time.perf_counter()
        try:
            result = fn(*args)
        except Exception as err:  # noqa: BLE001 - record and go on to the next section
            traceback.print_exc()
            result = {"error": f"{type(err).__name__}: {err}"}
        if isinstance(result, dict):
            result["seconds"] = round(time.perf_counter() - t, 1)
        self.data["sections"][name] = result
        self.write()
        return result

    def write(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, default=str) + "\n")
        tmp.replace(self.path)


def check_kernels(device: str, dry: bool) -> dict:
    import torch

    from xception.fast.kernels.check import CASES, run_case, stats_stability

    shapes = [(2, 80, 11)] if dry else [(8, 128, 38), (4, 728, 19)]  # n, c, size
    rows = []
    for n, c, size in shapes:
        for case in CASES:
            for dtype in (torch.float32, torch.bfloat16):
                for training in (True, False):
                    r = run_case(case, device, dtype, training, n=n, c=c, size=size)
                    r["shape"] = [n, c, size, size]
                    rows.append(r)
                    if not r["ok"]:
                        print(f"   FAIL {case.name} {dtype} train={training} {r['errors']}")
    failed = [f"{r['case']}/{r['dtype']}/{'train' if r['training'] else 'eval'}/{r['shape']}"
              for r in rows if not r["ok"]]
    stab = stats_stability(device)
    print(f"   {len(rows) - len(failed)}/{len(rows)} cases ok; variance at mean 1000: "
          f"{stab:.1e} relative error", flush=True)
    return {"cases": rows, "failed": failed, "all_ok": not failed and stab < 1e-4,
            "variance_rel_error_at_mean_1000": stab}


def _train_step_grads(model, x, g, bf16: bool):
    import torch

    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        y = model.train()(x)
    (y.float() * g).sum().backward()
    return y.float().detach(), [p.grad.detach().clone() for p in model.parameters()]


def _grad_error(grads, ref) -> float:
    """Worst per-tensor error relative to its own size; tensors below 1e-3 of the largest
    gradient are measured on that floor (cuDNN's own run-to-run rounding on a near-cancelling
    gradient would otherwise fail a correct kernel; tests/fast/test_fuse.py, on CPU, uses 1e-5)."""
    floor = 1e-3 * max(float(r.abs().max()) for r in ref)
    return max(float((a.float() - r).abs().max()) / max(float(r.abs().max()), floor)
               for a, r in zip(grads, ref, strict=True))


def check_model(device: str, dry: bool) -> dict:
    """One training step of the whole model, fused vs unfused. fp32: they must agree. bf16:
    both are compared with the fp32 step, and the fused model must be about as close to it as
    PyTorch's own bf16 autocast is (a 36-layer net's bf16 gradients differ by percents)."""
    import copy

    import torch

    from xception import create_model
    from xception.fast import optimize_for_inference, relative_error
    from xception.fast.fuse import fuse_model

    tiny = dict(stem_channels=(8, 8), entry_channels=(16, 16, 32), middle_channels=32,
                middle_repeats=2, exit_channels=(32, 64), final_channels=(64, 64))
    name, kw, size, batch = ("xception_small", tiny, 32, 4) if dry else ("xception", {}, 299, 8)
    torch.manual_seed(0)
    base = create_model(name, **kw).to(device).to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, size, size, device=device).contiguous(
        memory_format=torch.channels_last)
    g = torch.randn(batch, base.num_classes, device=device)
    runs = {}
    for label, fused, bf16 in (("unfused_fp32", False, False), ("fused_fp32", True, False),
                               ("fused_fp32_checkpointing", True, False),
                               ("unfused_bf16", False, True), ("fused_bf16", True, True)):
        model = copy.deepcopy(base)
        if fused:
            fuse_model(model)
        model.set_grad_checkpointing(label.endswith("checkpointing"))
        runs[label] = _train_step_grads(model, x, g, bf16)
    ref_y, ref_g = runs["unfused_fp32"]
    errs = {label: {"out": relative_error(y, ref_y), "grads": _grad_error(gr, ref_g)}
            for label, (y, gr) in runs.items() if label != "unfused_fp32"}
    fp32_ok = max(*errs["fused_fp32"].values(), *errs["fused_fp32_checkpointing"].values()) <= 1e-3
    bf16_ok = all(errs["fused_bf16"][k] <= max(2 * errs["unfused_bf16"][k], 2e-2)
                  for k in ("out", "grads"))
    model = copy.deepcopy(base).eval()
    with torch.no_grad():
        opt_err = relative_error(optimize_for_inference(model)(x), model(x))
    out = {"model": name, "image_size": size, "batch": batch, "errors_vs_unfused_fp32": errs,
           "fp32_ok": fp32_ok, "bf16_ok": bf16_ok, "optimize_for_inference_rel_err": opt_err,
           "all_ok": fp32_ok and bf16_ok and opt_err <= 1e-4}
    print(f"   {errs}; optimize_for_inference {opt_err:.1e}", flush=True)
    return out


def timings(tag: str, settings_kw: dict, dry: bool) -> dict:
    from xception.bench import BenchSettings, format_table, run_benchmark

    report = run_benchmark(BenchSettings(**settings_kw), log=lambda line: print(line, flush=True))
    print(format_table(report), flush=True)
    return report


def main() -> int:
    args = _parse()
    _prepare_imports(args.dry_run)
    import torch

    from xception.bench import environment

    device = "cpu" if args.dry_run else "cuda"
    if not args.dry_run and not torch.cuda.is_available():
        print("no CUDA device: run with --dry-run on CPU", file=sys.stderr)
        return 2
    rep = Report(args.out)
    rep.data["environment"] = environment(torch.device(device))
    rep.data["dry_run"] = args.dry_run
    rep.write()
    kernels = rep.section("kernels", check_kernels, device, args.dry_run)
    model = rep.section("model", check_model, device, args.dry_run)

    if args.dry_run:
        base = dict(model="xception_small", device="cpu", image_size=75, reps=1, iters=1,
                    warmup=1, num_classes=10, threads=2)
        train_b, infer_b = 2, 2
    else:
        base = dict(model="xception", device="cuda", dtype="bf16", channels_last=True,
                    reps=args.reps, iters=args.iters, warmup=3)
        train_b, infer_b = args.train_batch, args.infer_batch
    plan = [
        ("train_eager", dict(base, modes=("train",), batch=train_b,
                             contenders=("ours", "ours_fused", "timm", "inception"))),
        ("infer_eager", dict(base, modes=("inferN", "infer1"), batch=infer_b)),
        ("train_cuda_graphs", dict(base, modes=("train",), batch=train_b, cuda_graphs=True,
                                   contenders=("ours", "ours_fused", "timm", "inception"))),
        ("infer_cuda_graphs", dict(base, modes=("inferN",), batch=infer_b, cuda_graphs=True)),
        ("train_checkpointing", dict(base, modes=("train",), batch=train_b, checkpointing=True,
                                     reps=1, contenders=("ours", "ours_fused"))),
        ("infer_compiled", dict(base, modes=("inferN",), batch=infer_b, compile=True,
                                contenders=("ours_opt", "ours_fused", "timm", "inception"))),
        ("train_compiled", dict(base, modes=("train",), batch=train_b, compile=True,
                                contenders=("ours", "timm", "inception"))),
    ]
    for tag, kw in plan:
        if args.dry_run and (kw.get("cuda_graphs") or tag == "train_compiled"):
            continue  # no CUDA; compiling training graphs takes ~10 min on 2 CPU cores
        if rep.elapsed() > args.budget_s:
            rep.data["sections"][tag] = {"skipped": f"time budget of {args.budget_s:.0f}s spent"}
            rep.write()
            continue
        rep.section(tag, timings, tag, kw, args.dry_run)
    rep.data["goals"] = goals(rep.data["sections"])
    rep.data["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    rep.write()
    print(json.dumps(rep.data["goals"], indent=2))
    ok = kernels.get("all_ok") and model.get("all_ok")
    print(f"correctness: {'ALL OK' if ok else 'FAILURES (see gpu_check.json)'}; "
          f"{rep.elapsed():.0f}s; report {rep.path}")
    return 0 if ok else 1


def goals(sections: dict) -> dict:
    """The issue's targets, read off the best variant of each kind that was measured."""
    def best(tags, mode, names):
        vals = [sections[t]["results"][mode][n]["img_per_s"] for t in tags if t in sections
                and "results" in sections[t] and mode in sections[t]["results"]
                for n in names if sections[t]["results"][mode].get(n, {}).get("img_per_s")]
        return max(vals) if vals else None

    train_tags = ("train_eager", "train_cuda_graphs", "train_compiled")
    infer_tags = ("infer_eager", "infer_cuda_graphs", "infer_compiled")
    ours_train = best(train_tags, "train", ("ours", "ours_fused"))
    timm_train = best(train_tags, "train", ("timm",))
    incep_train = best(train_tags, "train", ("inception",))
    ours_infer = best(infer_tags, "inferN", ("ours", "ours_opt", "ours_fused"))
    return {
        "train_img_s_best_ours": ours_train, "train_img_s_best_timm": timm_train,
        "train_img_s_best_inception": incep_train,
        "train_ge_4000": None if ours_train is None else ours_train >= 4000,
        "train_ge_2.25x_timm": None if not (ours_train and timm_train)
        else ours_train >= 2.25 * timm_train,
        "train_faster_than_inception": None if not (ours_train and incep_train)
        else ours_train > incep_train,
        "infer_img_s_best_ours": ours_infer,
        "infer_ge_15000": None if ours_infer is None else ours_infer >= 15000,
    }


if __name__ == "__main__":
    sys.exit(main())
