"""One-command experiments: the paper's ablations and its open questions, with tables and plots.

``run("residual", seeds=5)`` trains every variant under the same budget and seeds and writes, into
the output folder: ``results.md`` / ``results.csv`` (mean and 95% CI per variant), ``curves.png``,
``summary.png``, ``effects.png`` (and ``cost.png`` / ``benefit.png`` where they apply),
``report.md`` (declared tests, CIs, verdict words, confounds) and ``runs.jsonl`` (every run).
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ..errors import ConfigError
from ..files import atomic_write_text
from ..config import ModelSection, RunConfig, apply_overrides
from .budget import DEFAULT_DATA, MODEL, MODEL_OVERRIDES, budget_overrides, budget_reason
from .definitions import NAMES, Experiment, Test, get_experiment
from .plots import Effect, plot_benefit, plot_cost, plot_curves, plot_effects, plot_summary
from .report import render
from .runner import run_experiment
from .stats import summarize, to_csv, to_markdown
from .verdicts import evaluate, headline, per_seed

__all__ = ["NAMES", "Experiment", "base_config", "get_experiment", "run"]


def base_config(overrides: list[str] = ()) -> RunConfig:
    """The default budget for the chosen dataset (``budget.py``; Fashion-MNIST unless a
    ``data.name=...`` override says otherwise), with the user's ``--set`` overrides on top."""
    data = next((o.split("=", 1)[1] for o in reversed(list(overrides))
                 if o.startswith("data.name=")), DEFAULT_DATA)
    start = RunConfig(model=ModelSection(MODEL, MODEL_OVERRIDES))
    return apply_overrides(start, [f"data.name={data}", *budget_overrides(data), *overrides])


def run(name: str, seeds: int = 5, overrides: list[str] = (), out_dir: str | Path | None = None,
        match_params: bool = False, log: Callable[[str], None] = print,
        command: str | None = None, reuse: bool = True) -> Path:
    """Run experiment ``name`` and write its results; returns the output folder. ``reuse``:
    copy runs of the same network, budget and seed from the experiments beside ``out_dir``
    instead of training them again (``runner``)."""
    base = base_config(list(overrides))
    exp = get_experiment(name, base.model.name, base.model.overrides, match_params)
    out = Path(out_dir or Path("experiments") / exp.name)
    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}")
    log(f"experiment {exp.name}: {len(exp.variants)} variants x {seeds} seeds -> {out}")
    t0 = time.perf_counter()
    records = run_experiment(exp, base, list(range(seeds)), out, log, reuse)
    rows = summarize(records)
    outcomes = evaluate(exp, records)
    atomic_write_text(out / "results.md", to_markdown(rows))
    atomic_write_text(out / "results.csv", to_csv(rows))
    plots = write_plots(exp, records, outcomes, out)
    setup = describe(base, exp, seeds, records, time.perf_counter() - t0,
                     command or f"xception experiment {name} --seeds {seeds}")
    atomic_write_text(out / "report.md", render(exp, records, rows, outcomes, setup, plots))
    log(to_markdown(rows))
    log(f"verdict: {headline(outcomes)}")
    log(f"report: {out / 'report.md'}")
    return out


def describe(base: RunConfig, exp: Experiment, seeds: int, records: list[dict], seconds: float,
             command: str) -> list[str]:
    """The setup lines of the report: data, budget, model, seeds, machine, time."""
    from ..bench.results import cpu_name

    tc, dc = base.train, base.data
    length = f"{tc.max_steps} steps" if tc.max_steps else f"{tc.epochs} epochs"
    return [
        f"command: `{command}`",
        f"data: {dc.name}, {dc.image_size} px, training subset {dc.train_subset or 'all'} "
        f"images, validation {dc.val_subset or 'all'} images of the fixed validation split",
        f"budget: {length}, batch {tc.batch_size}, {base.optimizer.name} lr {base.optimizer.lr}, "
        f"{base.schedule.name} schedule, BatchNorm statistics from {tc.bn_recalibration} "
        "training batches before each evaluation; the same for every variant",
        f"model: {base.model.name} with {base.model.overrides}",
        f"seeds: {', '.join(map(str, range(seeds)))} (initialisation, data order, augmentation)",
        f"why this budget: {budget_reason(dc.name)}",
        f"machine: {platform.machine()} ({cpu_name()}), {tc.threads or torch.get_num_threads()} "
        "CPU thread(s) per run, "
        f"Python {platform.python_version()}, torch {torch.__version__}",
        f"time: {sum(r['seconds'] for r in records):.0f} s of training and evaluation over "
        f"{len(records)} runs (each timed when it ran); this invocation took {seconds:.0f} s, "
        "reusing runs already in runs.jsonl",
        *shared_line(records),
    ]


def shared_line(records: list[dict]) -> list[str]:
    """Which runs were trained once for a neighbouring experiment (the same network, budget
    and seed) and copied here: said, because the experiments' results are then not independent."""
    reused = [r for r in records if r.get("reused_from")]
    if not reused:
        return []
    where = sorted({f"{r['reused_from']['folder']}'s {r['reused_from']['variant']!r} as "
                    f"{r['variant']!r}" for r in reused})
    own = sum(r["seconds"] for r in records if not r.get("reused_from"))
    return [f"shared runs: {len(reused)} of {len(records)} runs were trained once for a "
            f"neighbouring experiment with the identical network, budget and seed and copied "
            f"(`reused_from` in runs.jsonl): {'; '.join(where)}; {own:.0f} s in the runs "
            "trained for this experiment"]


def write_plots(exp: Experiment, records: list[dict], outcomes: list, out: Path) -> list[str]:
    """Curves, per-seed summary, effects (and cost / benefit plots where they apply)."""
    plot_curves(records, out / "curves.png", exp.name)
    plot_summary(records, out / "summary.png", exp.name)
    plot_effects([Effect(o.test.label, o.per_seed, o.effect.diff, o.effect.low, o.effect.high,
                         o.verdict.split(" (")[0]) for o in outcomes],
                 out / "effects.png", exp.name,
                 unit="points; a trend: points per step" if any(o.test.is_trend for o in outcomes)
                 else "points")
    names = ["curves", "summary", "effects"]
    if exp.name.startswith("spectrum"):
        plot_cost(records, out / "cost.png", exp.name)
        names.append("cost")
    trend = next((o for o in outcomes if o.test.is_trend and o.test.b), None)
    if trend is not None:  # compression: the residual benefit at each ratio
        t = trend.test
        per_level = [per_seed(records, Test(t.label, a, b, metric=t.metric))
                     for a, b in zip(t.a, t.b, strict=True)]
        plot_benefit([2 ** v for v in t.levels], per_level, out / "benefit.png", exp.name)
        names.append("benefit")
    return names
