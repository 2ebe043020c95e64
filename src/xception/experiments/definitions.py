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
class Experiment:
    name: str
    question: str
    claim: str
    variants: tuple[Variant, ...]


def residual() -> Experiment:
    return Experiment(
        "residual",
        "Do residual connections matter? (paper Fig. 9)",
        "Without residual connections Xception converges much more slowly and ends lower.",
        (Variant("residual", {"residual": True}), Variant("no residual", {"residual": False})))


def activation() -> Experiment:
    return Experiment(
        "activation",
        "Which intermediate activation between depthwise and pointwise? (paper Fig. 10)",
        "No intermediate activation is best, then ELU, then ReLU (none > ELU > ReLU).",
        tuple(Variant(n, {"mid_activation": a}) for n, a in
              (("none", None), ("ELU", "elu"), ("ReLU", "relu"))))


def order() -> Experiment:
    return Experiment(
        "order",
        "Does the order of the two ops matter? (open question 2)",
        "The paper: unimportant in a deep stack. The review doubts it (compress-then-spatial "
        "vs spatial-then-compress).",
        tuple(Variant(f"{o.replace('_', '-')}{' + ReLU' if a else ''}",
                      {"order": o, "mid_activation": a})
              for o in ("depthwise_first", "pointwise_first") for a in (None, "relu")))


def compression() -> Experiment:
    return Experiment(
        "compression",
        "Does the benefit of residual connections grow with how hard a block compresses "
        "channels? (open question 3)",
        "Hypothesis: the more the inner pointwise convs compress (bottleneck ratio 1, 2, 4, 8), "
        "the more the residual connection helps.",
        tuple(Variant(f"ratio {r}{'' if res else ', no residual'}",
                      {"bottleneck_ratio": r, "residual": res})
              for r in (1, 2, 4, 8) for res in (True, False)))


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


def scale_widths(base: dict[str, Any], model: str, factor: float, multiple: int) -> dict[str, Any]:
    """Every channel width times ``factor``, rounded to a multiple of ``multiple``."""
    cfg = model_config(model, **base)

    def r(w: int) -> int:
        return max(multiple, round(w * factor / multiple) * multiple)

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
    return Experiment(
        "spectrum" + ("-matched" if match_params else ""),
        "Where on the Inception <-> Xception spectrum is the optimum? (open question 1)",
        "The paper leaves it open; Xception (depthwise) beat Inception V3 (3-4 segments) at equal "
        "parameter count." + (" Widths are scaled so every point has about the parameter count "
                              "of the depthwise model." if match_params else ""),
        tuple(variants))


NAMES = ("residual", "activation", "spectrum", "order", "compression")


def get_experiment(name: str, model: str, base: dict[str, Any],
                   match_params: bool = False) -> Experiment:
    if name not in NAMES:
        raise ConfigError(f"unknown experiment {name!r}; choose one of {', '.join(NAMES)}")
    if match_params and name != "spectrum":
        raise ConfigError("--match-params applies to the spectrum experiment only")
    if name == "spectrum":
        return spectrum(model, base, match_params)
    return {"residual": residual, "activation": activation, "order": order,
            "compression": compression}[name]()
