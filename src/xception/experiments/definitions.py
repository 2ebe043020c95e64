"""The paper's ablations and its open questions, each a named set of model variants.

An experiment only says *which* models to compare and what the paper (or its review) claims; the
runner trains every variant under the same budget and seeds, and ``report.py`` checks the claim
against the numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from ..models.registry import model_config
from .budget import count_parameters


@dataclass(frozen=True)
class Variant:
    name: str
    overrides: dict[str, Any] = field(default_factory=dict)  # XceptionConfig fields


@dataclass(frozen=True)
class Test:
    """One pre-declared comparison on per-seed values paired by seed.

    ``a``/``b``: variant names; the effect is a - b. A trend test gives ``a`` as the variants
    along an ordered factor (``levels``, e.g. log2 of a ratio) and, optionally, ``b`` as the
    same number of baseline variants, making the per-level value a - b (a benefit).
    ``claim``: "greater" (the effect is > 0) or "equal" (|effect| < the experiment's margin,
    claimed only through an equivalence test). ``primary`` tests decide the headline verdict
    and form one Holm family; the others form a second family."""

    label: str
    a: str | tuple[str, ...]
    b: str | tuple[str, ...] | None = None
    claim: str = "greater"
    metric: str = "final_top1"          # or "auc": mean val top-1 over the epochs
    primary: bool = True
    levels: tuple[float, ...] = ()      # a trend test when given

    @property
    def is_trend(self) -> bool:
        return bool(self.levels)


@dataclass(frozen=True)
class Experiment:
    name: str
    question: str
    claim: str
    variants: tuple[Variant, ...]
    tests: tuple[Test, ...] = ()
    confounds: str = ""
    margin: float = 0.5                 # points: equivalence margin of "equal" claims

    @property
    def primary_metric(self) -> str:
        return next(t.metric for t in self.tests if t.primary)


def residual() -> Experiment:
    return Experiment(
        "residual",
        "Do residual connections matter? (paper Fig. 9)",
        "Without residual connections Xception converges much more slowly and ends lower.",
        (Variant("residual", {"residual": True}), Variant("no residual", {"residual": False})),
        (Test("ends higher with residual connections", "residual", "no residual"),
         Test("converges faster with residual connections (area under the val top-1 curve)",
              "residual", "no residual", metric="auc", primary=False)),
        "Removing the residual connections also removes the 1x1 shortcut convolutions of the "
        "entry and exit flows (fewer parameters, see the table); nothing else changes. At a "
        "fixed budget a variant that optimises more slowly also ends less trained, so the "
        "final-accuracy gap includes convergence speed (compare the final training losses).")


def activation() -> Experiment:
    names = ("none", "ELU", "ReLU")
    return Experiment(
        "activation",
        "Which intermediate activation between depthwise and pointwise? (paper Fig. 10)",
        "No intermediate activation is best, then ELU, then ReLU (none > ELU > ReLU).",
        tuple(Variant(n, {"mid_activation": a}) for n, a in zip(names, (None, "elu", "relu"),
                                                                strict=True)),
        tuple(Test(f"{a} > {b}", a, b) for a, b in (("none", "ELU"), ("ELU", "ReLU"),
                                                      ("none", "ReLU"))),
        "None in parameters or multiply-adds (the activations have no weights). The paper's "
        "intermediate activation sits between the depthwise conv and its BatchNorm-free "
        "pointwise conv; how it interacts with the optimizer settings (one learning rate for "
        "all three) is not separated here.")


def order() -> Experiment:
    pairs = [(f"depthwise-first{r}", f"pointwise-first{r}") for r in ("", " + ReLU")]
    return Experiment(
        "order",
        "Does the order of the two ops matter? (open question 2)",
        "The paper: unimportant in a deep stack. The review doubts it (compress-then-spatial "
        "vs spatial-then-compress).",
        tuple(Variant(f"{o.replace('_', '-')}{' + ReLU' if a else ''}",
                      {"order": o, "mid_activation": a})
              for o in ("depthwise_first", "pointwise_first") for a in (None, "relu")),
        tuple(Test(f"the order does not matter{' with an intermediate ReLU' * ('ReLU' in a)}",
                   a, b, claim="equal") for a, b in pairs),
        "Pointwise-first runs its depthwise conv at the block's output width instead of its "
        "input width, so parameters and multiply-adds differ slightly between the orders (see "
        "the table).")


def compression(match_params: bool = False, model: str = "", base: dict | None = None
                ) -> Experiment:
    ratios = (1, 2, 4, 8)
    variants = [Variant(f"ratio {r}{'' if res else ', no residual'}",
                        {"bottleneck_ratio": r, "residual": res})
                for r in ratios for res in (True, False)]
    if match_params:
        target = count_parameters(model, {**(base or {}), "bottleneck_ratio": 1})
        variants = [Variant(v.name, match_parameters(model, base or {}, v.overrides, target))
                    for v in variants]
    with_res = tuple(f"ratio {r}" for r in ratios)
    without = tuple(f"ratio {r}, no residual" for r in ratios)
    return Experiment(
        "compression" + ("-matched" if match_params else ""),
        "Does the benefit of residual connections grow with how hard a block compresses "
        "channels? (open question 3)",
        "Hypothesis: the more the inner pointwise convs compress (bottleneck ratio 1, 2, 4, 8), "
        "the more the residual connection helps.",
        tuple(variants),
        (Test("the residual benefit grows with the ratio (slope per doubling)", with_res,
              without, levels=(0.0, 1.0, 2.0, 3.0)),
         *(Test(f"residual connections help at ratio {r}", a, b, primary=False)
           for r, a, b in zip(ratios, with_res, without, strict=True))),
        ("Widths are scaled so every variant has about the parameters of ratio 1 with "
         "residual connections; the multiply-adds still differ." if match_params else
         "Parameters and multiply-adds fall with the ratio (see the table), so the ratio and "
         "the model's capacity change together; `--match-params` scales the widths so every "
         "variant has about the parameters of ratio 1."))


def segment_points(model: str, overrides: dict[str, Any]) -> list[int | None]:
    """1, 2, 4, ... while it divides every separable conv, then None (depthwise)."""
    cfg = model_config(model, **overrides)
    channels = cfg.spatial_channels()
    points: list[int | None] = []
    s = 1
    while all(c % s == 0 for c in channels) and s < min(channels):
        points.append(s)
        s *= 2
    return [*points, None]


# torch 2.14.1's oneDNN corrupts the heap (abort: "double free or corruption") in the weight
# gradient of a channels_last 1x1 stride-2 conv with fewer than 8 input channels when it runs on
# one thread of an AMD EPYC CPU; block2's shortcut sees the stem's width. No width goes below 8.
MIN_WIDTH = 8


def scale_widths(base: dict[str, Any], model: str, factor: float, multiple: int) -> dict[str, Any]:
    """Every channel width times ``factor``, rounded to a multiple of ``multiple``, at least
    ``MIN_WIDTH``."""
    cfg = model_config(model, **base)

    def r(w: int) -> int:
        return max(multiple, MIN_WIDTH, round(w * factor / multiple) * multiple)

    return {**base,
            "stem_channels": tuple(r(w) for w in cfg.stem_channels),
            "entry_channels": tuple(r(w) for w in cfg.entry_channels),
            "middle_channels": r(cfg.middle_channels),
            "exit_channels": tuple(r(w) for w in cfg.exit_channels),
            "final_channels": tuple(r(w) for w in cfg.final_channels)}


def match_parameters(model: str, base: dict[str, Any], variant: dict[str, Any],
                     target: int) -> dict[str, Any]:
    """Widths scaled (bisection on one factor) so the variant has about ``target`` parameters."""
    seg = variant.get("segments") or 1
    multiple = max(seg, 4)
    lo, hi = 0.05, 4.0
    best = None
    for _ in range(30):
        mid = (lo + hi) / 2
        trial = {**scale_widths(base, model, mid, multiple), **variant}
        n = count_parameters(model, trial)
        if best is None or abs(n - target) < abs(best[0] - target):
            best = (n, trial)
        lo, hi = (mid, hi) if n < target else (lo, mid)
    assert best is not None
    return best[1]


def spectrum(model: str, base: dict[str, Any], match_params: bool = False) -> Experiment:
    points = segment_points(model, base)
    variants = [Variant("depthwise" if s is None else f"{s} segment{'s' * (s > 1)}",
                        {"segments": s}) for s in points]
    if match_params:
        target = count_parameters(model, {**base, "segments": None})
        variants = [Variant(v.name, match_parameters(model, base, v.overrides, target))
                    for v in variants]
    names = tuple(v.name for v in variants)
    return Experiment(
        "spectrum" + ("-matched" if match_params else ""),
        "Where on the Inception <-> Xception spectrum is the optimum? (open question 1)",
        "The paper leaves it open; Xception (depthwise) beat Inception V3 (3-4 segments) at equal "
        "parameter count: tested here as \"accuracy rises towards the depthwise end\"." + (
            " Widths are scaled so every point has about the parameter count of the depthwise "
            "model." if match_params else ""),
        tuple(variants),
        (Test("accuracy rises with the number of segments (slope per doubling, depthwise = "
              "the last doubling)", names, levels=tuple(float(i) for i in range(len(names)))),
         *(Test(f"depthwise > {n}", "depthwise", n, primary=False) for n in names[:-1])),
        ("Widths differ between the points (fewer segments: narrower layers), so the "
         "representation's width changes with the segment count; multiply-adds are not "
         "matched." if match_params else
         "Parameters and multiply-adds change with the segment count (1 segment = full "
         "convolutions, several times the parameters of depthwise), so capacity changes with "
         "the spectrum point; `--match-params` gives the parameter-matched version."))


NAMES = ("residual", "activation", "spectrum", "order", "compression")


def get_experiment(name: str, model: str, base: dict[str, Any],
                   match_params: bool = False) -> Experiment:
    if name not in NAMES:
        raise ConfigError(f"unknown experiment {name!r}; choose one of {', '.join(NAMES)}")
    if match_params and name not in ("spectrum", "compression"):
        raise ConfigError("--match-params applies to the spectrum and compression experiments")
    if name == "spectrum":
        return spectrum(model, base, match_params)
    if name == "compression":
        return compression(match_params, model, base)
    return {"residual": residual, "activation": activation, "order": order}[name]()
