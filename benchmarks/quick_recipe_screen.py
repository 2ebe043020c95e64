"""Screen variants of the quick recipe over paired seeds: final val top-1 and which images miss.

Each run is a fresh process that trains ``xception train``'s recipe with the variant's ``--set``
overrides and the given seed (2 threads unless ``--threads``), then records the final val top-1,
the training seconds and the indices of the misclassified validation images, one JSON line per
run, appended to ``--out`` (runs already there are skipped, so a stopped screen resumes):

    python benchmarks/quick_recipe_screen.py --seeds 0-9 --variant base= \\
        --variant e12=train.epochs=12 --out benchmarks/results/cpu/quick_screen.jsonl

A variant is ``NAME=KEY=VALUE[,KEY=VALUE...]`` (``NAME=`` alone: the recipe as it is).
``--summary FILE...`` prints, from such files, each variant's errors per seed and, for every
variant against the first one, the mean paired difference in errors with its 95% t-interval.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def worker(overrides: list[str], seed: int, threads: int) -> None:
    import torch

    from xception.config import apply_overrides
    from xception.data.build import build_datasets
    from xception.training.fit import fit
    from xception.training.recipes import get_recipe

    sets = [*overrides, f"train.seed={seed}", f"train.threads={threads}", "train.progress=false"]
    cfg = apply_overrides(get_recipe("quick"), sets)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        res = fit(cfg, Path(tmp) / "run", log=lambda *_: None)
    wall = time.perf_counter() - t0
    _, val_ds, _ = build_datasets(cfg.data, cfg.train.seed)
    model = res.model.eval()
    xs, ys = zip(*(val_ds[i] for i in range(len(val_ds))), strict=True)
    with torch.inference_mode():
        pred = model(torch.stack(xs).to(memory_format=torch.channels_last)).argmax(1)
    wrong = [i for i, (p, y) in enumerate(zip(pred.tolist(), ys, strict=True)) if p != int(y)]
    print(json.dumps({"top1": res.final["val_top1"], "wrong": wrong, "train_s": res.seconds,
                      "wall_s": round(wall, 1), "history": [h["val_top1"] for h in res.history]}))


def summary(files: list[Path]) -> None:
    """Errors (misclassified validation images) per variant and seed; paired differences."""
    from xception.experiments.significance import paired

    runs: dict[str, dict[int, int]] = {}
    for f in files:
        for r in map(json.loads, f.read_text().splitlines()):
            runs.setdefault(r["variant"], {})[r["seed"]] = len(r["wrong"])
    first = next(iter(runs))
    for name, errs in runs.items():
        seeds = sorted(errs)
        line = (f"{name:>10}: seeds {seeds[0]}-{seeds[-1]} errors {[errs[s] for s in seeds]} "
                f"mean {sum(errs.values()) / len(errs):.2f}, <= 3 errors (>= 99.0%) in "
                f"{sum(e <= 3 for e in errs.values())}/{len(errs)}")
        both = [s for s in seeds if s in runs[first]]
        if name != first and len(both) > 1:
            d = paired([errs[s] for s in both], [runs[first][s] for s in both])
            line += (f"; vs {first}: {d.diff:+.2f} +- {(d.high - d.low) / 2:.2f} errors "
                     f"(95% CI, {d.n} pairs)")
        print(line)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", action="append", help="NAME=KEY=VALUE[,KEY=VALUE]")
    ap.add_argument("--seeds", default="0-4", help="A-B or a comma list")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--summary", type=Path, nargs="+", help="summarise these result files")
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.summary:
        summary(a.summary)
        return
    if not a.variant or a.out is None:
        ap.error("--variant and --out are needed (or --summary FILE...)")
    variants = {}
    for v in a.variant:
        name, _, sets = v.partition("=")
        variants[name] = [s for s in sets.split(",") if s]
    if a.worker:
        worker(variants[a.worker[0]], int(a.worker[1]), a.threads)
        return
    if "-" in a.seeds:
        lo, hi = map(int, a.seeds.split("-"))
        seeds = list(range(lo, hi + 1))
    else:
        seeds = [int(s) for s in a.seeds.split(",")]
    done = set()
    if a.out.exists():
        done = {(r["variant"], r["seed"]) for r in map(json.loads, a.out.read_text().splitlines())}
    for seed in seeds:  # seeds outer: every variant gets each seed before the next seed starts
        for name, sets in variants.items():
            if (name, seed) in done:
                continue
            cmd = [sys.executable, __file__, "--worker", name, str(seed), "--threads",
                   str(a.threads), *[x for v in a.variant for x in ("--variant", v)], "--out", str(a.out)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            row = {"variant": name, "sets": sets, "seed": seed, "threads": a.threads,
                   **json.loads(out.strip().splitlines()[-1])}
            with a.out.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(name, seed, row["top1"], row["train_s"], flush=True)


if __name__ == "__main__":
    main()
