"""Pilot of the `transfer` experiment (issue 27): its epoch budgets, chosen on the validation
splits (never the test images), before any of its runs.

Declared before any run (this docstring is the declaration):

- data, networks and methods: `xception.experiments.transfer`'s (this script imports them);
  seed 0 only; the validation splits are the 2,500 held-out training images of each task.
- pretraining: a ladder of 4, 8, 16 epochs on the source task; the budget is the smallest rung
  whose final validation top-1 is within 0.3 points of the next rung's, else 16.
- target task, per k (10, 100, all images per class): a ladder E, 2E, 4E epochs with E = 25,
  10, 3, each rung a full run of all three methods starting from the chosen pretraining; the
  budget is the smallest rung within 0.3 points of the next for all three methods, else 4E
  (then the report says the budget, not a plateau, stopped it).

Pilot v1 (2026-12-08, the 2-vCPU AMD EPYC, torch 2.14.1, one thread; its target records are in
``pilot_v1_target_adamw_1e-3.jsonl``): pretraining chose 16 epochs (val top-1 92.2 / 93.0 /
93.96% at 4 / 8 / 16: stopped by the budget). With the guide's AdamW at a constant 1e-3 the
linear probe and the fine-tune's head did not converge within the target ladder: probe 16 / 37 /
50% at 10 per class (25 / 50 / 100 epochs), 44 / 53% at 100 per class (10 / 20), against 79-94%
from scratch and 78.5% for a logistic regression on the same frozen features (500 images, an
ad-hoc check): the comparison would have measured an undertrained head, not transfer. Stopped
before the "all" rung; the methods' learning rate is being re-chosen on the validation split
(``lr_screen/pilot.jsonl``, the probe from the 16-epoch pretraining, seed 0: at 100 per class,
20 epochs, 52.8 / 73.1 / 77.6 / 81.0 / 70.2% at lr 1e-3 / 1e-2 / 3e-2 / 1e-1 / 3e-1; at 10 per
class, 50 epochs, 36.6 / 62.8 / 68.1 / 68.6% at 1e-3 / 3e-2 / 1e-1 / 3e-1): the rule, the best
at 100 per class, gives ``transfer.HEAD_LR`` = 0.1, and pilot v2 re-runs the target ladder
with it (the pretraining records are kept: its recipe did not change).

Resumable: every finished run is appended to `pilot.jsonl` in the output folder and skipped
when the script runs again; `--summary` prints the ladder and the chosen budgets.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from xception.experiments import transfer as T

OUT = Path(__file__).parent / "results" / "cpu" / "transfer_pilot"
PRETRAIN_RUNGS = (4, 8, 16)
FIRST = {10: 25, 100: 10, 0: 3}
RUNGS, TOLERANCE = 3, 0.003
MACHINE = {"threads": 1, "seed": 0, "progress": False}


def read(out: Path) -> list[dict]:
    path = out / "pilot.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] \
        if path.exists() else []


def pick(finals: list[float | None], rungs: list[int]) -> tuple[int, bool] | None:
    """The smallest rung within TOLERANCE of the next (plateaued), the last once every
    earlier one gained more (stopped by the budget), or None while undecided."""
    for i in range(len(rungs) - 1):
        a, b = finals[i], finals[i + 1]
        if a is None or b is None:
            return None
        if b - a <= TOLERANCE:
            return rungs[i], True
    return (rungs[-1], False) if finals[-1] is not None else None


def train(settings: dict, out: Path, tag: dict, folder: Path | None = None) -> dict:
    """One run, recorded; trained into ``folder`` (kept: a pretraining the target runs start
    from) or a partial folder removed once recorded, so that a killed pilot continues it."""
    from xception.config import RunConfig, with_changes
    from xception.experiments.resumable import PARTIAL, clear, fit_resumably
    from xception.provenance import environment

    changes = {**settings, "train": {**settings.get("train", {}), **MACHINE}}
    cfg = with_changes(RunConfig(), changes)
    partial = out / PARTIAL / "-".join(str(value) for value in tag.values())
    trained = fit_resumably(cfg, folder or partial)
    result = trained.result
    if result.interrupted:
        raise KeyboardInterrupt(f"{tag}: stopped, not recorded; run the pilot again to continue")
    history = [{k: row[k] for k in ("epoch", "train_loss", "val_loss", "val_top1")}
               for row in result.history]  # the test figures are dropped unread
    record = {**tag, "config": cfg.to_dict(), "history": history,
              "final_val_top1": history[-1]["val_top1"],
              "seconds": trained.seconds, "environment": environment(1)}
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "pilot.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
    clear(partial)
    return record


def pretraining(out: Path, records: list[dict]) -> tuple[int, bool] | None:
    done = {r["epochs"]: r for r in records if r["stage"] == "pretrain"}
    for epochs in PRETRAIN_RUNGS:
        if epochs not in done:
            settings = {"model": {"name": T.MODEL, "overrides": T._model()},
                        "data": T._data(T.SOURCE, 0), "train": {"epochs": epochs,
                                                                "bn_recalibration": 8}}
            done[epochs] = train(settings, out, {"stage": "pretrain", "epochs": epochs},
                                 out / "pretrain" / f"epochs{epochs}")
        chosen = pick([done.get(e, {}).get("final_val_top1") for e in PRETRAIN_RUNGS],
                      list(PRETRAIN_RUNGS))
        if chosen is not None:
            return chosen
    return None


def target(out: Path, records: list[dict], pretrain_epochs: int, shots: int
           ) -> tuple[int, bool]:
    """The target task's budget at ``shots`` per class: rung after rung, every method, until
    a rung is within TOLERANCE of the next for all three (or the ladder ends)."""
    rungs = [FIRST[shots] * 2 ** i for i in range(RUNGS)]
    done = {(r["method"], r["epochs"]): r["final_val_top1"] for r in records
            if r["stage"] == "target" and r["shots"] == shots}
    init = str(out / "pretrain" / f"epochs{pretrain_epochs}")
    for i, epochs in enumerate(rungs):
        for method in T.METHODS:
            if (method, epochs) not in done:
                settings = T.method_settings(method, shots, epochs)
                settings["model"] = {"name": T.MODEL, "overrides": T._model()}
                if "init" in settings["train"]:
                    settings["train"]["init"] = init
                tag = {"stage": "target", "shots": shots, "method": method, "epochs": epochs}
                done[method, epochs] = train(settings, out, tag)["final_val_top1"]
        if i and all(done[m, epochs] - done[m, rungs[i - 1]] <= TOLERANCE for m in T.METHODS):
            return rungs[i - 1], True
    return rungs[-1], False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--summary", action="store_true")
    args = parser.parse_args()
    from xception.provenance import code_version

    code_version()
    records = read(args.out)
    if args.summary:
        for r in records:
            what = "pretrain" if r["stage"] == "pretrain" else \
                f"{r['method']}, {T.shots_name(r['shots'])} per class"
            print(f"{what:>28} {r['epochs']:>3} epochs: val top-1 "
                  f"{100 * r['final_val_top1']:.2f}% ({r['seconds']:.0f} s)")
        return
    chosen = pretraining(args.out, records)
    print(f"pretraining: {chosen}", flush=True)
    budgets = {shots: target(args.out, read(args.out), chosen[0], shots) for shots in T.SHOTS}
    print(f"target budgets (epochs, plateaued): {budgets}")


if __name__ == "__main__":
    main()
