"""Train every variant of an experiment under the same budget and seeds; keep what each run saw.

``run`` is the whole experiment: the budget (``base_config``), every run (``run_experiment``), then
the tables, plots and report. ``run_record`` decides the fields of a run's record.

Each finished run is appended to ``runs.jsonl`` at once, so an interrupted experiment restarted
with the same ``--out`` skips what it already has (runs are keyed by a hash of their full config).
A run in progress is checkpointed at every epoch's end under ``partial/`` (``resumable.py``): a
process stopped by SIGTERM/SIGINT (the experiment stops: ``KeyboardInterrupt``) or killed records
nothing of it, and the next process to claim it continues it from there to the same result.

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
import os
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
from ..training.fit import FitResult
from .budget import DEFAULT_DATA, MODEL, MODEL_OVERRIDES, budget_overrides, count_macs
from .claims import CLAIMS, append_line, claim, release
from .definitions import Experiment, Variant, get_experiment
from .report import describe, render, write_plots
from .resumable import PARTIAL, clear, fit_resumably
from .stages import REF, bind, ensure_stage, find_stage, stage_folder, stage_name
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
    check_settings(experiment, list(overrides))
    started = time.perf_counter()
    if not report_only:
        records = run_experiment(experiment, base, list(range(seeds)), out, log, reuse)
        if len(records) < len(experiment.variants) * seeds:
            log(f"{len(experiment.variants) * seeds - len(records)} runs are being trained by "
                "other processes sharing this folder; the report is written by the last "
                "process to finish (or rerun with --report-only)")
            return out
    else:
        records = recorded_runs(experiment, list(range(seeds)), out / "runs.jsonl")
    rows = summarize(records)
    outcomes = evaluate(experiment, records)
    atomic_write_text(out / "results.md", to_markdown(rows))
    atomic_write_text(out / "results.csv", to_csv(rows))
    plots = write_plots(experiment, records, outcomes, out)
    speed = measure_speed(experiment, base, out, log) if experiment.side_by_side else None
    configs = [variant_config(base, variant.overrides, 0, variant.settings)
               for variant in experiment.variants]
    setup = describe(configs, experiment, seeds, records, time.perf_counter() - started,
                     command or f"xception experiment {name} --seeds {seeds}")
    atomic_write_text(out / "report.md", render(experiment, records, rows, outcomes, setup, plots,
                                                speed))
    log(to_markdown(rows))
    log(f"verdict: {headline(outcomes)}")
    log(f"report: {out / 'report.md'}")
    return out


def measure_speed(experiment: Experiment, base: RunConfig, out: Path,
                  log: Callable[[str], None] = print, reps: int = 15, num_classes: int = 10,
                  in_chans: int = 1) -> dict:
    """Training images/s of the ``side_by_side`` variants' networks (for ``num_classes`` and
    ``in_chans``: Fashion-MNIST's by default), in this process, in turns
    (``bench.timing.side_by_side_training``), kept in ``speed.json``: measured once, again only
    when the networks change."""
    from ..bench.timing import side_by_side_training
    from ..models.registry import build_model, model_config

    path = out / "speed.json"
    variants = {variant.name: variant for variant in experiment.variants}
    configs = {label: variant_config(base, variants[name].overrides, 0, variants[name].settings)
               for label, name in experiment.side_by_side}
    networks = {name: [cfg.model.name, cfg.model.overrides] for name, cfg in configs.items()}
    if path.exists():
        kept = json.loads(path.read_text())
        if kept.get("networks") == networks:
            return kept
    cfg = next(iter(configs.values()))
    threads = cfg.train.threads or torch.get_num_threads()
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        models = {name: build_model(model_config(c.model.name, num_classes=num_classes,
                                                 in_chans=in_chans, **c.model.overrides))
                  for name, c in configs.items()}
        log(f"timing {' and '.join(models)} side by side ({reps} repetitions)")
        load = os.getloadavg()[0]
        rates = side_by_side_training(models, (in_chans, cfg.data.image_size, cfg.data.image_size),
                                      num_classes,
                                      batch=cfg.train.batch_size, reps=reps)
    finally:
        torch.set_num_threads(previous)
    speed = {"networks": networks, "img_per_s": rates, "batch": cfg.train.batch_size,
             "image_size": cfg.data.image_size, "reps": reps, "load": load,
             "environment": environment(threads)}
    atomic_write_text(path, json.dumps(speed, indent=1) + "\n")
    return speed


def check_settings(experiment: Experiment, overrides: list[str]) -> None:
    """Refuse ``--set`` keys that some variant sets itself: the variant's value would win for
    it and the user's for the others, a comparison nobody asked for."""
    user = parse_assignments(overrides)
    clashes: set[str] = set()
    for variant in (*experiment.variants, *experiment.stages):
        for section, values in variant.settings.items():
            if section == "model":  # a variant that names its own network owns the model section
                clashes |= {f"model.{key}" for key in user.get("model", {})}
                continue
            clashes |= {f"{section}.{key}" for key in values if key in user.get(section, {})}
    if clashes:
        raise ConfigError(
            f"experiment {experiment.name} sets {', '.join(sorted(clashes))} itself (per "
            "variant, fixed before the runs); --set / --data / --epochs cannot change "
            f"{'it' if len(clashes) == 1 else 'them'}")


def keyed_config(experiment: Experiment, base: RunConfig, variant: Variant, seed: int
                 ) -> RunConfig:
    """The config a run is keyed by: ``variant_config``, with a stage reference in
    ``train.init`` ("@pretrain") bound to that stage run's key (``stages.py``)."""
    stage = stage_name(variant.settings)
    if stage is None:
        return variant_config(base, variant.overrides, seed, variant.settings)
    stage_key = run_key(stage_config(experiment, base, stage, seed))
    return variant_config(base, variant.overrides, seed,
                          bind(variant.settings, f"{REF}{stage}:{stage_key}"))


def stage_config(experiment: Experiment, base: RunConfig, stage: str, seed: int) -> RunConfig:
    """The run config of ``experiment``'s stage ``stage`` for ``seed``."""
    source = find_stage(experiment, stage)
    return variant_config(base, source.overrides, seed, source.settings)


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


# settings added after runs were recorded, with the default that leaves a run as it was: left
# out of a run's identity while at that default, so the recorded runs keep their keys
NEUTRAL = {"train.init": "", "train.freeze": "none", "train.freeze_bn": False,
           "train.bn_affine": False, "train.unfreeze_epoch": 0, "train.unfreeze_lr_scale": 0.01,
           "optimizer.head_lr_scale": 1.0, "data.classes": "", "data.per_class": 0,
           "train.checkpoint_every_s": 0.0, "train.sync_bn": False}


def identity_dict(cfg: RunConfig) -> dict:
    """``cfg.to_dict()`` without the ``NEUTRAL`` settings that are at their neutral default."""
    return {section: {key: value for key, value in values.items()
                      if NEUTRAL.get(f"{section}.{key}", object()) != value}
            for section, values in cfg.to_dict().items()}


def run_key(cfg: RunConfig) -> str:
    """The identity of a run: its full config and the code's numerics version, so a record made
    before a change of the arithmetic is not found again (``provenance.NUMERICS_VERSION``)."""
    identity = f"{json.dumps(identity_dict(cfg), indent=2)}\nnumerics {NUMERICS_VERSION}"
    return hashlib.sha1(identity.encode()).hexdigest()[:16]


def model_identity(cfg: RunConfig) -> str:
    """Like ``run_key``, but with the model's overrides resolved to its full config, so
    ``{"residual": True}`` and ``{"mid_activation": None}`` (both the default network) match."""
    resolved = identity_dict(cfg)
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
    """Append one finished run to ``runs.jsonl`` at once (what makes experiments resumable),
    locked against the other processes sharing the folder (``claims.py``)."""
    append_line(path, json.dumps(record))
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
    """All variants x seeds, trained seed by seed; returns one record per finished run, in
    variant-then-seed order (without the runs other processes still train: ``claims.py``).
    ``reuse``: take identical runs from the experiments beside ``out_dir`` (module docstring)."""
    code_version()  # read now, before the first run: the code this process trains with
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "runs.jsonl"
    shared = shared_runs(base, out_dir, log) if reuse else {}
    planned = {(variant.name, seed): keyed_config(experiment, base, variant, seed)
               for variant in experiment.variants for seed in seeds}
    found: dict[tuple[str, int], dict] = {}
    # seed by seed, so a stopped experiment has every variant of its first seeds
    order = [(variant, seed) for seed in seeds for variant in experiment.variants]
    for number, (variant, seed) in enumerate(order, 1):
        cfg = planned[variant.name, seed]
        key = run_key(cfg)
        tag = f"[{number}/{len(order)}] {variant.name}, seed {seed}"
        done = {record["key"]: record for record in read_records(path)}  # other processes' too
        if key in done:
            found[variant.name, seed] = done[key]
            log(f"{tag}: already done")
            continue
        twin = shared.get(model_identity(cfg))
        if twin is not None:
            record = append_record(path, reused_record(twin, key, experiment, variant, cfg))
            found[variant.name, seed] = record
            origin = record["reused_from"]
            log(f"{tag}: the same network, budget and seed as {origin['folder']}'s "
                f"{origin['variant']!r}: reused")
            continue
        stage = stage_name(variant.settings)
        if stage is not None:  # it starts from a stage run of its seed: that one first
            stage_cfg = stage_config(experiment, base, stage, seed)
            folder = stage_folder(out_dir, stage, seed)
            if not ensure_stage(stage_cfg, run_key(stage_cfg), folder, out_dir, log):
                log(f"{tag}: waits for stage {stage!r} of seed {seed}; left for later")
                continue
            cfg = variant_config(base, variant.overrides, seed,
                                 bind(variant.settings, str(folder)))
        holder = claim(out_dir / CLAIMS, key)
        if holder is not None:
            log(f"{tag}: being trained by another process ({holder}); left to it")
            continue
        try:
            folder = out_dir / PARTIAL / key
            trained = fit_resumably(cfg, folder)
            if trained.resumed_after:
                log(f"{tag}: resumed after epoch {trained.resumed_after} from {folder}")
            if trained.result.interrupted:  # SIGTERM/SIGINT: record nothing partial
                log(f"{tag}: interrupted; {len(read_records(path))} finished runs are kept in "
                    f"{path} and this one's last epoch in {folder}; the same command "
                    "continues from there")
                raise KeyboardInterrupt
            record = run_record(experiment, variant, seed, key, cfg, trained.result,
                                trained.seconds)
            found[variant.name, seed] = append_record(path, record)
            clear(folder)
        finally:
            release(out_dir / CLAIMS, key)
        log(f"{tag}: final val top-1 {100 * record['final_top1']:.2f}% "
            f"(best {100 * record['best_top1']:.2f}%), {record['seconds']:.0f} s")
    done = {record["key"]: record for record in read_records(path)}  # what the others finished
    for pair, cfg in planned.items():
        found.setdefault(pair, done.get(run_key(cfg)))
    return [found[variant.name, seed] for variant in experiment.variants for seed in seeds
            if found[variant.name, seed] is not None]
