"""The paper's ablations and its open questions, each a named set of model variants.

An experiment only says *which* models to compare and what the paper (or its review) claims; the
runner trains every variant under the same budget and seeds, and ``report.py`` checks the claim
against the numbers. ``EXPERIMENTS`` is the registry: name -> builder, every builder called as
``builder(model, base, match_params)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import ConfigError
from .budget import count_parameters, match_parameters, segment_points
from .design import Experiment, Test, Variant
from .transfer import transfer
from .versus import versus


def matched(variants: list[Variant], model: str, base: dict[str, Any],
            reference: dict[str, Any]) -> list[Variant]:
    """``variants`` with their widths scaled to about the parameters of ``base`` + ``reference``."""
    target = count_parameters(model, {**base, **reference})
    return [Variant(v.name, match_parameters(model, base, v.overrides, target)) for v in variants]


def residual(model: str, base: dict[str, Any], match_params: bool) -> Experiment:
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


def activation(model: str, base: dict[str, Any], match_params: bool) -> Experiment:
    names = ("none", "ELU", "ReLU")
    return Experiment(
        "activation",
        "Which intermediate activation between depthwise and pointwise? (paper Fig. 10)",
        "No intermediate activation is best, then ELU, then ReLU (none > ELU > ReLU).",
        tuple(Variant(name, {"mid_activation": function})
              for name, function in zip(names, (None, "elu", "relu"), strict=True)),
        tuple(Test(f"{better} > {worse}", better, worse)
              for better, worse in (("none", "ELU"), ("ELU", "ReLU"), ("none", "ReLU"))),
        "None in parameters or multiply-adds (the activations have no weights). The paper's "
        "intermediate activation sits between the depthwise conv and its BatchNorm-free "
        "pointwise conv; how it interacts with the optimizer settings (one learning rate for "
        "all three) is not separated here.")


def order(model: str, base: dict[str, Any], match_params: bool) -> Experiment:
    pairs = [(f"depthwise-first{suffix}", f"pointwise-first{suffix}") for suffix in ("", " + ReLU")]
    return Experiment(
        "order",
        "Does the order of the two ops matter? (open question 2)",
        "The paper: unimportant in a deep stack. The review doubts it (compress-then-spatial "
        "vs spatial-then-compress).",
        tuple(Variant(f"{op_order.replace('_', '-')}{' + ReLU' if function else ''}",
                      {"order": op_order, "mid_activation": function})
              for op_order in ("depthwise_first", "pointwise_first") for function in (None, "relu")),
        tuple(Test(f"the order does not matter{' with an intermediate ReLU' * ('ReLU' in first)}",
                   first, second, claim="equal") for first, second in pairs),
        "Pointwise-first runs its depthwise conv at the block's output width instead of its "
        "input width, so parameters and multiply-adds differ slightly between the orders (see "
        "the table).")


def compression(model: str, base: dict[str, Any], match_params: bool) -> Experiment:
    ratios = (1, 2, 4, 8)
    variants = [Variant(f"ratio {ratio}{'' if shortcut else ', no residual'}",
                        {"bottleneck_ratio": ratio, "residual": shortcut})
                for ratio in ratios for shortcut in (True, False)]
    if match_params:
        variants = matched(variants, model, base, {"bottleneck_ratio": 1})
    with_res = tuple(f"ratio {ratio}" for ratio in ratios)
    without = tuple(f"ratio {ratio}, no residual" for ratio in ratios)
    return Experiment(
        "compression" + ("-matched" if match_params else ""),
        "Does the benefit of residual connections grow with how hard a block compresses "
        "channels? (open question 3)",
        "Hypothesis: the more the inner pointwise convs compress (bottleneck ratio 1, 2, 4, 8), "
        "the more the residual connection helps.",
        tuple(variants),
        (Test("the residual benefit grows with the ratio (slope per doubling)", with_res,
              without, levels=(0.0, 1.0, 2.0, 3.0)),
         *(Test(f"residual connections help at ratio {ratio}", residual_variant, plain_variant,
                primary=False)
           for ratio, residual_variant, plain_variant in zip(ratios, with_res, without,
                                                             strict=True))),
        ("Widths are scaled so every variant has about the parameters of ratio 1 with "
         "residual connections; the multiply-adds still differ." if match_params else
         "Parameters and multiply-adds fall with the ratio (see the table), so the ratio and "
         "the model's capacity change together; `--match-params` scales the widths so every "
         "variant has about the parameters of ratio 1."))


def spectrum(model: str, base: dict[str, Any], match_params: bool) -> Experiment:
    variants = [Variant("depthwise" if segments is None
                        else f"{segments} segment{'s' * (segments > 1)}", {"segments": segments})
                for segments in segment_points(model, base)]
    if match_params:
        variants = matched(variants, model, base, {"segments": None})
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
         *(Test(f"depthwise > {name}", "depthwise", name, primary=False) for name in names[:-1])),
        ("Widths differ between the points (fewer segments: narrower layers), so the "
         "representation's width changes with the segment count; multiply-adds are not "
         "matched." if match_params else
         "Parameters and multiply-adds change with the segment count (1 segment = full "
         "convolutions, several times the parameters of depthwise), so capacity changes with "
         "the spectrum point; `--match-params` gives the parameter-matched version."))


# name -> builder(model, base overrides, match_params); every builder takes all three, and those
# with nothing to match ignore what they do not use. The order is the command line's.
EXPERIMENTS: dict[str, Callable[[str, dict[str, Any], bool], Experiment]] = {
    "residual": residual, "activation": activation, "spectrum": spectrum, "order": order,
    "compression": compression, "versus": versus, "transfer": transfer}
# the experiments whose builders scale widths for ``match_params`` (named "<name>-matched")
MATCHABLE = frozenset({"spectrum", "compression"})
NAMES = tuple(EXPERIMENTS)


def get_experiment(name: str, model: str, base: dict[str, Any],
                   match_params: bool = False) -> Experiment:
    if name not in EXPERIMENTS:
        raise ConfigError(f"unknown experiment {name!r}; choose one of {', '.join(NAMES)}")
    if match_params and name not in MATCHABLE:
        raise ConfigError(f"--match-params applies to the "
                          f"{' and '.join(n for n in NAMES if n in MATCHABLE)} experiments")
    return EXPERIMENTS[name](model, base, match_params)
