"""Train every variant of an experiment under the same budget and seeds; keep what each run saw.

``run`` is the whole experiment: the budget (``base_config``), every run (``run_experiment``), then
the tables, plots and report. ``run_record`` decides the fields of a run's record.

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
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from ..config import RunConfig, merge_changes, parse_assignments, with_changes
from ..errors import ConfigError
from ..files import atomic_write_text
from ..provenance import NUMERICS_VERSION, code_version, environment
from ..training.fit import FitResult, fit
from .budget import DEFAULT_DATA, MODEL, MODEL_OVERRIDES, budget_overrides, count_macs
from .definitions import Experiment, Variant, get_experiment
from .report import describe, render, write_plots
from .stats import summarize, to_csv, to_markdown
from .verdicts import evaluate, headline


def base_config(overrides: list[str] = ()) -> RunConfig:
    """The default budget for the chosen dataset (``budget.py``; Fashion-MNIST unless a
    ``data.name=...`` override says otherwise), with the user's ``--set`` overrides on top."""
    user = parse_assignments(overrides)
    data = user.get("data", {}).get("name", DEFAULT_DATA)
    budget = parse_assignments([f"data.name={data}", *budget_overrides(data)])
    model = {"model": {"name": MODEL, "overrides": MODEL_OVERRIDES}}
    return RunConfig.from_dict(merge_changes(model, budget, user))


def run(name: str, seeds: int = 5, overrides: list[str] = (), out_dir: str | Path | None = None,
        match_params: bool = False, log: Callable[[str], None] = print,
        command: str | None = None, reuse: bool = True, report_only: bool = False) -> Path:
    """Run experiment ``name`` and write its results; returns the output folder. ``reuse``:
    copy runs of the same network, budget and seed from the experiments beside ``out_dir``
    instead of training them again (module docstring). ``report_only``: train nothing; write
    the tables, plots and report from the runs already in ``out_dir/runs.jsonl``."""
    base = base_config(list(overrides))
    experiment = get_experiment(name, base.model.name, base.model.overrides, match_params)
    out = Path(out_dir or Path("experiments") / experiment.name)
    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}")
    log(f"experiment {experiment.name}: {len(experiment.variants)} variants x {seeds} seeds -> {out}")
    started = time.perf_counter()
    if report_only:
        records = recorded_runs(experiment, list(range(seeds)), out / "runs.jsonl")
    else:
        records = run_experiment(experiment, base, list(range(seeds)), out, log, reuse)
    rows = summarize(records)
    outcomes = evaluate(experiment, records)
    atomic_write_text(out / "results.md", to_markdown(rows))
    atomic_write_text(out / "results.csv", to_csv(rows))
    plots = write_plots(experiment, records, outcomes, out)
    setup = describe(base, experiment, seeds, records, time.perf_counter() - started,
                     command or f"xception experiment {name} --seeds {seeds}")
    atomic_write_text(out / "report.md", render(experiment, records, rows, outcomes, setup, plots))
    log(to_markdown(rows))
    log(f"verdict: {headline(outcomes)}")
    log(f"report: {out / 'report.md'}")
    return out


def variant_config(base: RunConfig, overrides: dict[str, Any], seed: int,
                   settings: dict[str, dict[str, Any]] | None = None) -> RunConfig:
    """The budget ``base`` with a variant's model overrides, its other settings and the seed."""
    settings = settings or {}
    name = settings.get("model", {}).get("name", base.model.name)
    inherited = base.model.overrides if name == base.model.name else {}
    changes = {section: values for section, values in settings.items() if section != "model"}
    changes["model"] = {"name": name, "overrides": {**inherited, **overrides}}
    changes["train"] = {**changes.get("train", {}), "seed": seed, "progress": False}
    return with_changes(base, changes)  # one new config, validated once


def run_key(cfg: RunConfig) -> str:
    """The identity of a run: its full config and the code's numerics version, so a record made
    before a change of the arithmetic is not found again (``provenance.NUMERICS_VERSION``)."""
    identity = f"{cfg.to_json()}\nnumerics {NUMERICS_VERSION}"
    return hashlib.sha1(identity.encode()).hexdigest()[:16]


def model_identity(cfg: RunConfig) -> str:
    """Like ``run_key``, but with the model's overrides resolved to its full config, so
    ``{"residual": True}`` and ``{"mid_activation": None}`` (both the default network) match."""
    resolved = cfg.to_dict()
    resolved["model"] = {"name": cfg.model.name, "config": asdict(cfg.model.config)}
    resolved["numerics"] = NUMERICS_VERSION
    return hashlib.sha1(json.dumps(resolved, sort_keys=True, default=str).encode()).hexdigest()[:16]


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
        for record in records:
            try:
                cfg = variant_config(base, record["overrides"], record["seed"],
                                     record.get("settings"))
            except (KeyError, TypeError, ValueError):
                continue
            if run_key(cfg) == record.get("key"):
                origin = record.get("reused_from") or {
                    "folder": path.parent.name, "variant": record["variant"], "key": record["key"]}
                found.setdefault(model_identity(cfg), {**record, "reused_from": origin})
    return found


def run_record(experiment: Experiment, variant: Variant, seed: int, key: str, cfg: RunConfig,
               result: FitResult, seconds: float) -> dict:
    """The record of one trained run, as ``runs.jsonl`` keeps it: the one place its fields are
    decided (``reused_record`` copies one under a new key)."""
    history = result.history
    # epoch 1 includes one-off start-up costs; later epochs show the steady rate
    steady = history[1:] or history
    return {
        "key": key, "experiment": experiment.name, "variant": variant.name, "seed": seed,
        "overrides": cfg.model.overrides, "settings": variant.settings,
        # everything the run was (data, split, budget, optimizer, schedule, BatchNorm handling,
        # augmentation, model) and what it ran on: the record stands on its own
        "config": cfg.to_dict(),
        "environment": environment(cfg.train.threads or torch.get_num_threads()),
        "params": sum(p.numel() for p in result.model.parameters() if p.requires_grad),
        "macs": count_macs(result.model, cfg.data.image_size, result.info.preprocess.in_chans),
        "history": [{k: epoch[k] for k in ("epoch", "train_loss", "val_loss", "val_top1")}
                    for epoch in history],
        "final_top1": history[-1]["val_top1"],
        "best_top1": max(epoch["val_top1"] for epoch in history),
        # data.val_holdout: the test split, evaluated once after the last epoch (else None)
        "test_top1": history[-1].get("test_top1"),
        "img_per_s": sum(epoch["train_img_per_s"] for epoch in steady) / len(steady),
        "seconds": seconds,
    }


def reused_record(twin: dict, key: str, experiment: Experiment, variant: Variant,
                  cfg: RunConfig) -> dict:
    """``twin`` (a neighbouring experiment's run of the same network, budget and seed, with its
    ``reused_from``) as this experiment's run ``key`` of ``variant``."""
    return {**twin, "key": key, "experiment": experiment.name, "variant": variant.name,
            "overrides": cfg.model.overrides, "settings": variant.settings}


def append_record(path: Path, record: dict) -> dict:
    """Append one finished run to ``runs.jsonl`` at once (what makes experiments resumable)."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
    return record


def read_records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def recorded_runs(experiment: Experiment, seeds: list[int], path: Path) -> list[dict]:
    """The recorded run of every variant and seed, in variant-then-seed order, whatever code
    made it (the report states each run's environment); the newest where there are several."""
    latest = {(record["variant"], record["seed"]): record for record in read_records(path)}
    wanted = [(variant.name, seed) for variant in experiment.variants for seed in seeds]
    missing = [f"{variant} seed {seed}" for variant, seed in wanted if (variant, seed) not in latest]
    if missing:
        raise ConfigError(f"{path} has no run of {', '.join(missing[:5])}"
                          f"{f' and {len(missing) - 5} more' if len(missing) > 5 else ''}; "
                          "run the experiment without --report-only to train them")
    return [latest[pair] for pair in wanted]


def run_experiment(experiment: Experiment, base: RunConfig, seeds: list[int], out_dir: Path,
                   log: Callable[[str], None] = print, reuse: bool = True) -> list[dict]:
    """All variants x seeds; returns one record per run, in variant-then-seed order.
    ``reuse``: take identical runs from the experiments beside ``out_dir`` (module docstring)."""
    code_version()  # read now, before the first run: the code this process trains with
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "runs.jsonl"
    done = {record["key"]: record for record in read_records(path)}
    shared = shared_runs(base, out_dir, log) if reuse else {}
    records, total = [], len(experiment.variants) * len(seeds)
    for variant in experiment.variants:
        for seed in seeds:
            cfg = variant_config(base, variant.overrides, seed, variant.settings)
            key = run_key(cfg)
            tag = f"[{len(records) + 1}/{total}] {variant.name}, seed {seed}"
            if key in done:
                records.append(done[key])
                log(f"{tag}: already done")
                continue
            twin = shared.get(model_identity(cfg))
            if twin is not None:
                record = append_record(path, reused_record(twin, key, experiment, variant, cfg))
                records.append(record)
                origin = record["reused_from"]
                log(f"{tag}: the same network, budget and seed as {origin['folder']}'s "
                    f"{origin['variant']!r}: reused")
                continue
            started = time.perf_counter()
            result = fit(cfg, None, log=lambda s: None)
            if result.interrupted:  # SIGTERM/SIGINT: keep what is finished, record nothing partial
                log(f"{tag}: interrupted; {len(read_records(path))} finished runs are kept in "
                    f"{path}; the same command continues from there")
                raise KeyboardInterrupt
            record = run_record(experiment, variant, seed, key, cfg, result,
                                time.perf_counter() - started)
            records.append(append_record(path, record))
            log(f"{tag}: final val top-1 {100 * record['final_top1']:.2f}% "
                f"(best {100 * record['best_top1']:.2f}%), {record['seconds']:.0f} s")
    return records
