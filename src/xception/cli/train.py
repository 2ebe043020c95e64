"""``xception train``: a recipe, a config file, flags and ``--set``, validated, then ``fit``.

The same command runs on one CPU or under ``torchrun`` on many GPUs and nodes; ``--resume RUN``
continues an interrupted run exactly.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from ..config import RunConfig, merge_changes, parse_assignments, read_config_file
from ..training.recipes import default_summary, list_recipes, recipe_changes, recipe_summary
from . import example, non_negative_int, positive_float, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    width = max(map(len, list_recipes()))
    recipes = "recipes (--recipe):\n" + "".join(
        f"  {name:<{width}}  {recipe_summary(name)}\n" for name in list_recipes()) + "\n"
    p = sub.add_parser(
        "train", help=f"train a model (default: {default_summary()})",
        description="Train a model and write a run folder: config.json, metrics.jsonl/.csv, "
        "curves.png, checkpoint.pt and model.safetensors. Under torchrun every process runs "
        f"this command; rank 0 writes the folder. Default: {default_summary()}.",
        **example("xception train --data photos/ --epochs 20 --out runs/pets", before=recipes))
    p.add_argument("--recipe", default=None, choices=list_recipes(),
                   help="named starting point (default: quick); see docs/recipes.md")
    p.add_argument("--config", metavar="FILE",
                   help="a JSON run config (as written to config.json; may be partial)")
    p.add_argument("--model", help="model name, e.g. xception_small, xception, inception_v3")
    p.add_argument("--data", help="digits, fashion-mnist, mnist, cifar10, cifar100, an ImageFolder "
                   "root (train/ + val/) or a multi-label manifest folder/file")
    p.add_argument("--init", metavar="WEIGHTS",
                   help="start from these weights (any file or run folder `convert` reads: "
                   "Keras .h5/.keras, timm .pth, ours); matching tensors are loaded, the "
                   "classifier is new for the data's classes (train.init)")
    p.add_argument("--epochs", type=positive_int)
    p.add_argument("--batch-size", type=positive_int, help="global batch (all processes together)")
    p.add_argument("--lr", type=positive_float, help="peak learning rate (see optimizer.lr_reference_batch)")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--precision", help="auto, fp32, bf16 or fp16")
    p.add_argument("--workers", type=non_negative_int, help="data loader processes per training process")
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config field, e.g. --set optimizer.weight_decay=1e-4 or "
                   "--set model.residual=false (repeatable)")
    p.add_argument("--out", metavar="DIR", help="run folder (default: runs/<model>-<data>-<time>)")
    p.add_argument("--resume", metavar="RUN|auto",
                   help="continue the run in this folder from its checkpoint (its config.json, "
                   "plus any flags given here); 'auto' (with --out): continue --out's run if it "
                   "has a checkpoint, else start it, so the same command can be restarted "
                   "(torchrun --max-restarts, a requeued job)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar or step lines")
    p.set_defaults(func=run)


def resolve_config(args: argparse.Namespace) -> RunConfig:
    """recipe (or the resumed run's config.json) < --config file < flags < --set, stacked as
    typed changes and made into one validated ``RunConfig`` before any work starts: every file
    is read once, only the --set text is parsed, the model config is made once (``fit`` makes
    it once more for the data's class and channel counts, known when the data is read)."""
    from ..data import resolve_data_arg
    from ..errors import ConfigError

    if args.resume and not _auto(args):
        if args.recipe or args.config:
            raise ConfigError("--resume continues a run with its own config.json; "
                              "drop --recipe/--config (flags and --set still apply)")
        base = read_config_file(Path(args.resume) / "config.json")
    else:
        base = recipe_changes(args.recipe or "quick")
    layers = [base]
    if args.config:
        layers.append(read_config_file(args.config))
    flags = {"model": {"name": args.model},
             "data": {"num_workers": args.workers,
                      **(resolve_data_arg(args.data) if args.data is not None else {})},
             "optimizer": {"lr": args.lr},
             "train": {"epochs": args.epochs, "batch_size": args.batch_size, "seed": args.seed,
                       "device": args.device, "precision": args.precision,
                       "compile": args.compile, "progress": False if args.no_progress else None,
                       "init": args.init}}
    given = {section: {k: v for k, v in values.items() if v is not None}
             for section, values in flags.items()}
    layers.append({section: values for section, values in given.items() if values})
    layers.append(parse_assignments(args.overrides))
    return RunConfig.from_dict(merge_changes(*layers))


def _auto(args: argparse.Namespace) -> bool:
    return args.resume == "auto"


# what a fresh run has written before its first checkpoint (a start killed that early leaves
# them: restarted with --resume auto and the same config, it starts again)
BEFORE_FIRST_CHECKPOINT = {"config.json", "metrics.jsonl", "metrics.csv", "curves.png", ".lock"}


def restart_decision(out: Path, cfg: RunConfig) -> bool:
    """``--resume auto``: resume iff ``out`` holds a checkpoint. Every process of a torchrun
    job decides the same: a fresh run's first checkpoint is written only after all of them
    have joined the process group, i.e. after each has decided. A folder holding only what
    this same run writes before its first checkpoint (its config.json equal to ``cfg``) is an
    earlier start of this command killed that early: rank 0 clears it and the run starts
    again; a folder with anything else is another run's, and the fresh start refuses it."""
    from ..training.checkpoint import has_checkpoint

    if has_checkpoint(out):
        return True
    config = out / "config.json"
    if out.is_dir() and config.is_file() and int(os.environ.get("RANK", "0")) == 0:
        names = {p.name for p in out.iterdir()}
        if names <= BEFORE_FIRST_CHECKPOINT and config.read_text().strip() == cfg.to_json():
            for name in names - {".lock"}:
                (out / name).unlink()
            print(f"--resume auto: {out} holds only an earlier start of this run that stopped "
                  "before its first checkpoint; starting again")
    return False


def run(args: argparse.Namespace) -> int:
    from ..training.fit import fit

    if _auto(args):  # the command as given, resumed from --out if it has a checkpoint
        if not args.out:
            from ..errors import ConfigError

            raise ConfigError("--resume auto needs --out DIR: the folder to continue or start")
        cfg = resolve_config(args)
        out = Path(args.out)
        resume = restart_decision(out, cfg)
        if resume and int(os.environ.get("RANK", "0")) == 0:
            print(f"--resume auto: {out} holds a checkpoint; continuing it")
        return _train(fit, cfg, out, resume)
    cfg = resolve_config(args)  # parsed and validated: model, data, batch split, image size
    if args.resume:
        if args.out and Path(args.out) != Path(args.resume):
            from ..errors import ConfigError

            raise ConfigError("--out and --resume name different folders; a resumed run "
                              "writes into its own folder")
        out = Path(args.resume)
    else:
        out = Path(args.out) if args.out else Path("runs") / \
            f"{cfg.model.name}-{cfg.data.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    return _train(fit, cfg, out, bool(args.resume))


def _train(fit, cfg: RunConfig, out: Path, resume: bool) -> int:
    result = fit(cfg, out, resume=resume)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    print(f"run folder: {out}")
    if result.interrupted:
        print(f"interrupted at step {result.global_step}; continue with: "
              f"xception train --resume {out}")
        return 0
    final = result.final
    print(f"final val top-1: {100 * final['val_top1']:.2f}% (top-5 {100 * final['val_top5']:.2f}%,"
          f" {final['epoch']} epochs, {result.seconds:.0f} s)")
    if "test_top1" in final:  # data.val_holdout: the test split, evaluated once
        print(f"test top-1 (evaluated once, after the last epoch): {100 * final['test_top1']:.2f}%")
    return 0
