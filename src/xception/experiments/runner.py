"""Train every variant of an experiment under the same budget and seeds; keep what each run saw.

Each finished run is appended to ``runs.jsonl`` at once, so an interrupted experiment restarted
with the same ``--out`` skips what it already has (runs are keyed by a hash of their full config).
A run stopped by SIGTERM/SIGINT is not recorded; the experiment stops (``KeyboardInterrupt``).

Experiments share variants (the default network is residual's "residual", activation's "none",
order's "depthwise-first", compression's "ratio 1" and spectrum's "depthwise"), so before training
a run the experiments beside ``--out`` are searched for one that built the same network (its
overrides resolved to the full model config) under the same budget and seed; that run is copied,
marked ``reused_from``, instead of being trained again. Training is deterministic on the CPU, so
this is the run the experiment would have trained.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from ..config import ModelSection, RunConfig
from ..training.fit import fit
from .budget import count_macs
from .definitions import Experiment


def variant_config(base: RunConfig, overrides: dict[str, Any], seed: int) -> RunConfig:
    model = ModelSection(base.model.name, {**base.model.overrides, **overrides})
    return replace(base, model=model, train=replace(base.train, seed=seed, progress=False))


def run_key(cfg: RunConfig) -> str:
    return hashlib.sha1(cfg.to_json().encode()).hexdigest()[:16]


def model_identity(cfg: RunConfig) -> str:
    """Like ``run_key``, but with the model's overrides resolved to its full config, so
    ``{"residual": True}`` and ``{"mid_activation": None}`` (both the default network) match."""
    d = cfg.to_dict()
    d["model"] = {"name": cfg.model.name, "config": asdict(cfg.model.config)}
    return hashlib.sha1(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def shared_runs(base: RunConfig, out_dir: Path, log: Callable[[str], None]) -> dict[str, dict]:
    """Finished runs of the experiments beside ``out_dir`` whose budget is ``base``, by
    ``model_identity``. A record counts only if rebuilding its config from ``base``, its
    overrides and its seed gives back its stored key, i.e. it ran with exactly this budget."""
    found: dict[str, dict] = {}
    for path in sorted(out_dir.parent.glob("*/runs.jsonl")):
        if path.parent.resolve() == out_dir.resolve():
            continue
        try:
            records = read_records(path)
        except ValueError as e:  # a damaged neighbour is not this experiment's problem
            log(f"not reusing runs from {path}: {e}")
            continue
        for r in records:
            try:
                cfg = variant_config(base, r["overrides"], r["seed"])
            except (KeyError, TypeError, ValueError):
                continue
            if run_key(cfg) == r.get("key"):
                origin = r.get("reused_from") or {"folder": path.parent.name,
                                                  "variant": r["variant"], "key": r["key"]}
                found.setdefault(model_identity(cfg), {**r, "reused_from": origin})
    return found


def keep(path: Path, record: dict) -> dict:
    """Append one finished run to ``runs.jsonl`` at once (what makes experiments resumable)."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
    return record


def read_records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_experiment(exp: Experiment, base: RunConfig, seeds: list[int], out_dir: Path,
                   log: Callable[[str], None] = print, reuse: bool = True) -> list[dict]:
    """All variants x seeds; returns one record per run, in variant-then-seed order.
    ``reuse``: take identical runs from the experiments beside ``out_dir`` (module docstring)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "runs.jsonl"
    done = {r["key"]: r for r in read_records(path)}
    shared = shared_runs(base, out_dir, log) if reuse else {}
    records, total = [], len(exp.variants) * len(seeds)
    for variant in exp.variants:
        for seed in seeds:
            cfg = variant_config(base, variant.overrides, seed)
            key = run_key(cfg)
            tag = f"[{len(records) + 1}/{total}] {variant.name}, seed {seed}"
            if key in done:
                records.append(done[key])
                log(f"{tag}: already done")
                continue
            twin = shared.get(model_identity(cfg))
            if twin is not None:
                record = {**twin, "key": key, "experiment": exp.name, "variant": variant.name,
                          "overrides": cfg.model.overrides}
                records.append(keep(path, record))
                o = record["reused_from"]
                log(f"{tag}: the same network, budget and seed as {o['folder']}'s "
                    f"{o['variant']!r}: reused")
                continue
            t0 = time.perf_counter()
            result = fit(cfg, None, log=lambda s: None)
            if result.interrupted:  # SIGTERM/SIGINT: keep what is finished, record nothing partial
                log(f"{tag}: interrupted; {len(read_records(path))} finished runs are kept in "
                    f"{path}; the same command continues from there")
                raise KeyboardInterrupt
            hist = result.history
            record = {
                "key": key, "experiment": exp.name, "variant": variant.name, "seed": seed,
                "overrides": cfg.model.overrides,
                "params": sum(p.numel() for p in result.model.parameters() if p.requires_grad),
                "macs": count_macs(result.model, cfg.data.image_size,
                                   result.info.preprocess.in_chans),
                "history": [{k: h[k] for k in ("epoch", "train_loss", "val_loss", "val_top1")}
                            for h in hist],
                "final_top1": hist[-1]["val_top1"],
                "best_top1": max(h["val_top1"] for h in hist),
                # epoch 1 includes one-off start-up costs; later epochs show the steady rate
                "img_per_s": sum(h["train_img_per_s"] for h in hist[1:] or hist)
                / len(hist[1:] or hist),
                "seconds": time.perf_counter() - t0,
            }
            records.append(keep(path, record))
            log(f"{tag}: final val top-1 {100 * record['final_top1']:.2f}% "
                f"(best {100 * record['best_top1']:.2f}%), {record['seconds']:.0f} s")
    return records
