"""Per-variant statistics over seeds (mean and sample standard deviation) and the tables."""

from __future__ import annotations

import csv
import io
import math
import warnings
from collections.abc import Sequence

FRACTIONS = (0.25, 0.5, 0.75, 1.0)  # of training, where val loss is read (convergence speed)
ACC_FRACTIONS = (0.25, 0.5)  # where val top-1 is read too: early losses can blow up, accuracy not


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value)."""
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    mean = sum(values) / n
    if n == 1:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def value_at(history: list[dict], fraction: float, key: str = "val_loss") -> float:
    """``key`` (val loss by default) after the epoch that ends ``fraction`` of training."""
    epoch = max(1, round(fraction * len(history)))
    return history[epoch - 1][key]


def by_variant(records: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in records:
        out.setdefault(r["variant"], []).append(r)
    return out


def summarize(records: list[dict]) -> list[dict]:
    """One row per variant (in first-seen order) with mean/std of every reported quantity."""
    rows = []
    for variant, runs in by_variant(records).items():
        row = {"variant": variant, "seeds": len(runs),
               "final_top1": mean_std([r["final_top1"] for r in runs]),
               "best_top1": mean_std([r["best_top1"] for r in runs])}
        for f in ACC_FRACTIONS:
            row[f"val_top1@{int(100 * f)}%"] = mean_std([value_at(r["history"], f, "val_top1")
                                                         for r in runs])
        for f in FRACTIONS:
            row[f"val_loss@{int(100 * f)}%"] = mean_std([value_at(r["history"], f) for r in runs])
        row["params"] = runs[0]["params"]
        row["macs"] = runs[0]["macs"]
        row["img_per_s"] = mean_std([r["img_per_s"] for r in runs])
        rows.append(row)
    return rows


def welch(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Mean difference a - b and Welch's two-sided p-value (nan with fewer than 2 seeds each)."""
    diff = mean_std(a)[0] - mean_std(b)[0]
    if len(a) < 2 or len(b) < 2:
        return diff, float("nan")
    if mean_std(a)[1] == 0 and mean_std(b)[1] == 0:  # no spread: the t statistic is undefined
        return diff, 1.0 if diff == 0 else 0.0
    with warnings.catch_warnings():  # near-identical seeds: scipy warns, the p-value stands
        warnings.simplefilter("ignore", RuntimeWarning)
        from scipy import stats as sps  # lazy: ~1.5 s, and every CLI command imports this package

        return diff, float(sps.ttest_ind(a, b, equal_var=False).pvalue)


def interaction(a1: Sequence[float], b1: Sequence[float], a2: Sequence[float],
                b2: Sequence[float]) -> tuple[float, float]:
    """How much the gap a - b changes from condition 1 to 2: (a2 - b2) - (a1 - b1), and a
    two-sided p-value from a t-test with Welch-Satterthwaite degrees of freedom (nan with fewer
    than 2 seeds in a group). Four independent groups of seeds, unequal variances."""
    groups = [list(a1), list(b1), list(a2), list(b2)]
    diff = (mean_std(a2)[0] - mean_std(b2)[0]) - (mean_std(a1)[0] - mean_std(b1)[0])
    if any(len(g) < 2 for g in groups):
        return diff, float("nan")
    terms = [mean_std(g)[1] ** 2 / len(g) for g in groups]
    se2 = sum(terms)
    if se2 == 0:
        return diff, 1.0 if diff == 0 else 0.0
    df = se2 ** 2 / sum(t ** 2 / (len(g) - 1) for t, g in zip(terms, groups, strict=True))
    from scipy import stats as sps

    return diff, float(2 * sps.t.sf(abs(diff) / math.sqrt(se2), df))


def _pct(ms: tuple[float, float]) -> str:
    return f"{100 * ms[0]:.2f} ± {100 * ms[1]:.2f}"


def _num(ms: tuple[float, float], digits: int = 3) -> str:
    return f"{ms[0]:.{digits}f} ± {ms[1]:.{digits}f}"


def columns() -> list[str]:
    return (["variant", "seeds", "final top-1 (%)", "best top-1 (%)"]
            + [f"top-1 @{int(100 * f)}% (%)" for f in ACC_FRACTIONS]
            + [f"val loss @{int(100 * f)}%" for f in FRACTIONS]
            + ["params", "MMACs", "train img/s"])


def table_cells(row: dict) -> list[str]:
    return ([row["variant"], str(row["seeds"]), _pct(row["final_top1"]), _pct(row["best_top1"])]
            + [_pct(row[f"val_top1@{int(100 * f)}%"]) for f in ACC_FRACTIONS]
            + [_num(row[f"val_loss@{int(100 * f)}%"]) for f in FRACTIONS]
            + [f"{row['params']:,}", f"{row['macs'] / 1e6:.1f}", _num(row["img_per_s"], 0)])


def to_markdown(rows: list[dict]) -> str:
    head = columns()
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(table_cells(r)) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict]) -> str:
    """Machine-readable: mean and std in separate columns."""
    buf = io.StringIO()
    w = csv.writer(buf)
    header = ["variant", "seeds"]
    keys = ["final_top1", "best_top1", *[f"val_top1@{int(100 * f)}%" for f in ACC_FRACTIONS],
            *[f"val_loss@{int(100 * f)}%" for f in FRACTIONS],
            "img_per_s"]
    for k in keys:
        header += [f"{k}_mean", f"{k}_std"]
    w.writerow([*header, "params", "macs"])
    for r in rows:
        w.writerow([r["variant"], r["seeds"], *[x for k in keys for x in r[k]],
                    r["params"], r["macs"]])
    return buf.getvalue()
