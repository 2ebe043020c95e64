"""``xception experiment NAME``: an ablation or open question, end to end, with tables and plots."""

from __future__ import annotations

import argparse
import shlex
import sys

from . import example, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    from ..experiments import NAMES

    p = sub.add_parser(
        "experiment", help="run a paper ablation / open question over seeds (tables, plots, report)",
        description="Train every variant of an experiment under the same budget and seeds, then "
        "write results.md/.csv, the plots and report.md (declared tests, 95% CIs, Holm-adjusted "
        "p-values, a verdict: supports / contradicts / inconclusive) into --out.",
        **example("xception experiment residual --seeds 5 --out docs/results/residual"))
    p.add_argument("name", choices=NAMES)
    p.add_argument("--data", help="dataset: fashion-mnist (default; offline from Debian's "
                   "dataset-fashion-mnist package), digits (a quick smoke run), mnist, ...")
    p.add_argument("--seeds", type=positive_int, default=5,
                   help="seeds per variant, paired across variants (default: 5)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--epochs", type=positive_int, help="epochs per run (default: the experiment budget)")
    budget.add_argument("--steps", type=positive_int, help="optimizer steps per run instead of epochs")
    p.add_argument("--match-params", action="store_true",
                   help="spectrum / compression: scale widths so every variant has about the "
                   "parameters of the reference (depthwise / ratio 1)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any run setting, as in `xception train --set`")
    p.add_argument("--out", metavar="DIR", help="output folder (default: experiments/NAME); "
                   "rerunning with the same folder reuses finished runs")
    p.add_argument("--no-reuse", dest="reuse", action="store_false",
                   help="train every run here even when an experiment beside --out already "
                   "trained the same network with the same budget and seed (copied by default)")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: write the tables, plots and report from the runs already "
                   "in --out's runs.jsonl (each run's own environment is stated)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..experiments import run as run_experiment

    sets = list(args.overrides)
    if args.data:
        sets.insert(0, f"data.name={args.data}")
    if args.epochs is not None:
        sets.insert(0, f"train.epochs={args.epochs}")
    if args.steps is not None:  # epochs high enough never to end the run first
        sets[:0] = [f"train.max_steps={args.steps}", f"train.epochs={max(args.steps, 1)}"]
    run_experiment(args.name, args.seeds, sets, args.out, args.match_params,
                   command="xception " + shlex.join(sys.argv[1:]), reuse=args.reuse,
                   report_only=args.report_only)
    return 0
