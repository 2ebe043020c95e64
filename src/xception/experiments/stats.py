"""Per-variant summaries over seeds (mean and 95% confidence interval) and the results tables.

Besides accuracy the table shows whether each run had converged: the final training loss and
its change over the last epoch (a plateau is a change near zero), and the area under the
validation-accuracy curve (mean val top-1 over the epochs), the convergence-speed measure.
"""

from __future__ import annotations

import csv
import io

from .significance import mean_ci


def by_variant(records: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for record in records:
        out.setdefault(record["variant"], []).append(record)
    return out


def last_change(history: list[dict], key: str = "train_loss") -> float:
    """``key`` after the last epoch minus after the one before (0 for a one-epoch run)."""
    return history[-1][key] - history[-2][key] if len(history) > 1 else 0.0


def tail_share(history: list[dict], key: str = "train_loss") -> float:
    """The last epoch's fall of ``key`` as a fraction of its whole fall since epoch 1: a run that
    has flattened has a small share (0 for fewer than 3 epochs or no fall)."""
    fall = history[0][key] - history[-1][key]
    return (history[-2][key] - history[-1][key]) / fall if len(history) > 2 and fall > 0 else 0.0


def auc(history: list[dict]) -> float:
    """Mean validation top-1 over the epochs: the area under the accuracy curve, per epoch."""
    return sum(h["val_top1"] for h in history) / len(history)


QUANTITIES = {  # name -> (header, value of one run, scale for display, decimals)
    "final_top1": ("final val top-1 (%)", lambda run: run["final_top1"], 100.0, 2),
    "auc": ("val top-1 AUC (%)", lambda run: auc(run["history"]), 100.0, 2),
    "train_loss": ("final train loss", lambda run: run["history"][-1]["train_loss"], 1.0, 4),
    "train_loss_change": ("last-epoch change", lambda run: last_change(run["history"]), 1.0, 4),
    "train_loss_tail": ("last epoch's share of the fall (%)",
                        lambda run: tail_share(run["history"]), 100.0, 1),
    "img_per_s": ("train img/s", lambda run: run["img_per_s"], 1.0, 0),
}


# the test split's top-1, evaluated once at the end where a validation split was held out
TEST = {"test_top1": ("test top-1 (%)", lambda run: run.get("test_top1"), 100.0, 2)}


def columns(tested: bool) -> dict:
    """The quantities of a table: QUANTITIES, led by the test top-1 where ``tested``."""
    return {**(TEST if tested else {}), **QUANTITIES}


def quantities(rows: list[dict]) -> dict:
    """The columns of these summary rows (the test top-1 where ``summarize`` gave it)."""
    return columns(bool(rows) and all("test_top1" in row for row in rows))


def summarize(records: list[dict]) -> list[dict]:
    """One row per variant (first-seen order): (mean, low, high) of every quantity (the test
    top-1 only where every run has one)."""
    rows = []
    tested = all(run.get("test_top1") is not None for run in records)
    for variant, runs in by_variant(records).items():
        row = {"variant": variant, "seeds": len(runs), "params": runs[0]["params"],
               "macs": runs[0]["macs"], "epochs": len(runs[0]["history"])}
        for key, (_, get, _, _) in columns(tested).items():
            row[key] = mean_ci([get(run) for run in runs])
        rows.append(row)
    return rows


def _cell(ci: tuple[float, float, float], scale: float, decimals: int) -> str:
    mean, low, high = (scale * value for value in ci)
    if low == high:
        return f"{mean:.{decimals}f}"
    return f"{mean:.{decimals}f} [{low:.{decimals}f}, {high:.{decimals}f}]"


def to_markdown(rows: list[dict]) -> str:
    columns = quantities(rows)
    head = ["variant", "seeds", *(header for header, *_ in columns.values()), "params", "MMACs"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row["variant"], str(row["seeds"])]
        cells += [_cell(row[key], scale, decimals)
                  for key, (_, _, scale, decimals) in columns.items()]
        cells += [f"{row['params']:,}", f"{row['macs'] / 1e6:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict]) -> str:
    """Machine-readable: mean and the 95% interval's ends in separate columns, raw units."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    columns = quantities(rows)
    writer.writerow(["variant", "seeds", "epochs",
                     *(f"{key}_{end}" for key in columns for end in ("mean", "ci_low", "ci_high")),
                     "params", "macs"])
    for row in rows:
        writer.writerow([row["variant"], row["seeds"], row["epochs"],
                         *(value for key in columns for value in row[key]),
                         row["params"], row["macs"]])
    return buffer.getvalue()
