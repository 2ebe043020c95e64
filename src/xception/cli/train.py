"""``xception train``: build a RunConfig from defaults, a config file and flags, then fit."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..config import RunConfig, apply_overrides


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model (default: xception_small on digits, ~2 min)",
                       description="Train a model and write a run folder: config.json, "
                       "metrics.jsonl/.csv, curves.png and model.safetensors.")
    p.add_argument("--config", metavar="FILE", help="a JSON run config (as written to config.json)")
    p.add_argument("--model", help="model name, e.g. xception_small, xception, inception_v3")
    p.add_argument("--data", help="dataset name (default: digits)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config field, e.g. --set optim.weight_decay=1e-4 or "
                   "--set model.residual=false (repeatable)")
    p.add_argument("--out", metavar="DIR", help="run folder (default: runs/<model>-<data>-<time>)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def resolve_config(args: argparse.Namespace) -> RunConfig:
    """Defaults < --config file < named flags < --set, all validated before any work starts."""
    cfg = RunConfig.load(args.config) if args.config else RunConfig()
    flags = {"model.name": args.model, "data.name": args.data, "train.epochs": args.epochs,
             "train.batch_size": args.batch_size, "optim.lr": args.lr, "train.seed": args.seed,
             "train.device": args.device}
    sets = [f"{k}={v}" for k, v in flags.items() if v is not None]
    if args.no_progress:
        sets.append("train.progress=false")
    return apply_overrides(cfg, sets + args.overrides)


def run(args: argparse.Namespace) -> int:
    from ..registry import model_config
    from ..train import fit

    cfg = resolve_config(args)
    model_config(cfg.model.name, **cfg.model.overrides)  # reject bad model settings up front
    out = Path(args.out) if args.out else \
        Path("runs") / f"{cfg.model.name}-{cfg.data.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    result = fit(cfg, out)
    final = result.final
    print(f"run folder: {out}")
    print(f"final val top-1: {100 * final['val_top1']:.2f}% (top-5 {100 * final['val_top5']:.2f}%,"
          f" {final['epoch']} epochs, {result.seconds:.0f} s)")
    return 0
