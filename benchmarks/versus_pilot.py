"""Pilot of the `versus` experiment (issue 26): the epoch budget per training-set size, chosen
on the held-out validation split, never on the test set.

Declared before any run (this docstring is the declaration):

The data, networks and budget are `xception.experiments.versus`'s (this script imports them).

- data: Fashion-MNIST at its own 28 px, 5,000 of the 60,000 training images held out as the
  validation split (`data.val_holdout=5000`, stratified, `data.split_seed=0`); training subsets
  of 3,438 / 13,750 / 55,000 of the other 55,000 images (factors of 4: log2 levels 0, 2, 4).
  The test split is evaluated by `fit` at the end of a held-out run; this script drops those
  figures from its records unread (the pilot chooses budgets; the test set is for the report).
- models, at equal parameters (within 3%) and the same total downsampling (both end at 4x4):
  Xception = `xception_small` at the experiments' half width (0.19 M parameters) with a stem
  that keeps 28 px (stride 1, TF-"same") and entry strides (1, 2, 2), so the middle flow runs on
  7x7 maps; Inception V3 at `width` matched to it by bisection, stem stride 1 and no stem pools,
  so its 17x17 group runs on 10x10 maps. The same head, optimizer (SGD + Nesterov, lr 0.1,
  batch 64, weight decay 5e-4), cosine schedule with 15% warm-up, augmentation (the digits'
  jitter) and BatchNorm recalibration (8 training batches before each evaluation).
- the rule: per size a ladder of budgets E, 2E, 4E, ... (E = 20 / 10 / 5 epochs for the three
  sizes); each rung is a full cosine run of that many epochs, seed 0. The size's budget is the
  smallest rung whose final validation top-1 is within 0.3 points of the next rung's, for both
  models (a longer schedule no longer helps either). The ladder stops at 8E.
- amended after the first 10 runs (all at E and 2E; no 4E run had started), for compute only:
  the ladder stops at 4E. At the measured speeds (about 2 ms per training image-epoch for
  Xception, 3.8 ms for Inception V3, one thread each) 5 paired seeds at 8E would cost about
  30 hours of this 2-core machine; the issue allows about 8 for the whole experiment. A size
  whose 2E -> 4E step still gains more than 0.3 points for either model gets 4E, and the report
  says that size was stopped by the budget, not by a plateau.
- amended a second time, after Xception's whole ladder and Inception V3's 3,438 x 80 run (no
  test-split figure had been read): Xception gained more than 0.3 points from 2E to 4E at every
  size, so by the rule every size gets 4E whatever Inception V3 does. The two Inception V3
  rungs still missing (13,750 x 40 and 55,000 x 20; stopped unfinished) were not run here: they
  are exactly the experiment's seed-0 runs of Inception V3 (`xception experiment versus`, same
  config, a test checks it), whose validation figures `--summary` reads from its runs.jsonl,
  marked "experiment seed 0". They cannot change the choice; they show whether Inception V3
  plateaued.

Resumable: every finished run is appended to its model's file in the output folder (with its
config and environment) and skipped when the script runs again. `--only xception|inception`
and `--sizes N ...` let two processes (one thread each) share the work; `--summary` prints
the ladder and the chosen budgets.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

# the experiment's data, networks and budget, from the package (one definition for both)
from xception.experiments.versus import FIRST_RUNG as SIZES
from xception.experiments.versus import MAX_RUNGS, TOLERANCE, run_settings

OUT = Path(__file__).parent / "results" / "cpu" / "versus_pilot"  # one <model>.jsonl each
EXPERIMENT = Path(__file__).parents[1] / "docs" / "results" / "versus" / "runs.jsonl"
MACHINE = ["train.threads=1", "train.seed=0", "train.progress=false"]


def read(folder: Path) -> list[dict]:
    """Every run recorded in ``folder`` (one file per model, so two processes never share one)."""
    return [json.loads(line) for path in sorted(folder.glob("*.jsonl"))
            for line in path.read_text().splitlines() if line.strip()]


def experiment_rungs(path: Path = EXPERIMENT) -> list[dict]:
    """The experiment's seed-0 runs as ladder rungs (validation figures only; see above)."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        record = json.loads(line) if line.strip() else None
        if not record or record["seed"] != 0:
            continue
        cfg = record["config"]
        out.append({"model": "inception" if cfg["model"]["name"] == "inception_v3" else "xception",
                    "size": cfg["data"]["train_subset"], "epochs": cfg["train"]["epochs"],
                    "params": record["params"], "final_val_top1": record["final_top1"],
                    "seconds": record["seconds"], "source": "experiment seed 0"})
    return out


def chosen(records: list[dict]) -> dict[int, tuple[int, bool] | None]:
    """Per size: (epochs, plateaued). The smallest rung within TOLERANCE of the next one for
    both models (plateaued); the last rung once no earlier rung can be (some model gained more
    than TOLERANCE from each rung to the next: stopped by the budget); else None (undecided)."""
    final = {(r["size"], r["epochs"], r["model"]): r["final_val_top1"] for r in records}
    models = ("xception", "inception")
    out: dict[int, tuple[int, bool] | None] = {}
    for size, first in SIZES.items():
        out[size] = (first * 2 ** (MAX_RUNGS - 1), False)
        for rung in range(MAX_RUNGS - 1):
            epochs, longer = first * 2 ** rung, first * 2 ** (rung + 1)
            pairs = [(final.get((size, epochs, m)), final.get((size, longer, m))) for m in models]
            gains = [b - a for a, b in pairs if a is not None and b is not None]
            if any(gain > TOLERANCE for gain in gains):
                continue  # this rung cannot be the plateau
            out[size] = (epochs, True) if len(gains) == len(models) else None
            break
    return out


def run_one(model: str, size: int, epochs: int, out: Path) -> dict:
    from xception.config import RunConfig, apply_overrides
    from xception.provenance import environment
    from xception.training import fit

    cfg = apply_overrides(RunConfig(), [*run_settings(model, size, epochs), *MACHINE])
    started = time.perf_counter()
    result = fit(cfg, None, log=lambda _: None)
    if result.interrupted:  # SIGTERM/SIGINT: nothing partial is recorded; rerun to continue
        raise KeyboardInterrupt(f"{model} {size} images {epochs} epochs: stopped, not recorded")
    history = [{k: row[k] for k in ("epoch", "train_loss", "val_loss", "val_top1")}
               for row in result.history]  # test_* of the last row are dropped unread
    record = {"model": model, "size": size, "epochs": epochs, "config": cfg.to_dict(),
              "params": sum(p.numel() for p in result.model.parameters() if p.requires_grad),
              "history": history, "final_val_top1": history[-1]["val_top1"],
              "seconds": time.perf_counter() - started, "environment": environment(1)}
    out.mkdir(parents=True, exist_ok=True)
    with open(out / f"{model}.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("xception", "inception"))
    parser.add_argument("--sizes", type=int, nargs="+", choices=sorted(SIZES),
                        help="only these training-set sizes (default: all three)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--summary", action="store_true")
    args = parser.parse_args()
    from xception.provenance import code_version

    code_version()  # read now, before the first run: the code this process trains with
    records = read(args.out)
    if args.summary:
        have = {(r["model"], r["size"], r["epochs"]) for r in records}
        records += [r for r in experiment_rungs() if (r["model"], r["size"], r["epochs"]) not in have]
        for r in sorted(records, key=lambda r: (r["size"], r["epochs"], r["model"])):
            print(f"{r['size']:>6} images {r['epochs']:>3} epochs {r['model']:>9}: val top-1 "
                  f"{100 * r['final_val_top1']:.2f}% ({r['params']:,} parameters, "
                  f"{r['seconds']:.0f} s){' [' + r['source'] + ']' if 'source' in r else ''}")
        print("chosen budgets (epochs):", chosen(records))
        return
    models = (args.only,) if args.only else ("xception", "inception")
    sizes = {size: first for size, first in SIZES.items() if not args.sizes or size in args.sizes}

    def ensure(model: str, size: int, epochs: int) -> None:
        if (model, size, epochs) in {(r["model"], r["size"], r["epochs"]) for r in read(args.out)}:
            return
        record = run_one(model, size, epochs, args.out)
        print(f"{model} {size} images {epochs} epochs: val top-1 "
              f"{100 * record['final_val_top1']:.2f}% ({record['seconds']:.0f} s)", flush=True)

    for size, first in sizes.items():  # the two rungs every size needs, smallest size first
        for model in models:
            ensure(model, size, first)
            ensure(model, size, 2 * first)
    for size, first in sizes.items():  # longer rungs while a model still gains from them
        for model in models:
            rung = 1
            while rung + 1 < MAX_RUNGS and not _settled(read(args.out), model, size, first, rung):
                rung += 1
                ensure(model, size, first * 2 ** rung)
    print("chosen budgets (epochs):", chosen(read(args.out)), file=sys.stderr)


def _settled(records: list[dict], model: str, size: int, first: int, rung: int) -> bool:
    """Whether ``model``'s rung ``rung - 1`` is within the tolerance of rung ``rung``."""
    final = {(r["size"], r["epochs"], r["model"]): r["final_val_top1"] for r in records}
    shorter = final.get((size, first * 2 ** (rung - 1), model))
    longer = final.get((size, first * 2 ** rung, model))
    return shorter is not None and longer is not None and longer - shorter <= TOLERANCE


if __name__ == "__main__":
    main()
