"""The default experiment budget, per dataset, and what each variant costs (parameters, MACs),
with the width scaling that matches a variant's parameters to a reference.

Fashion-MNIST is the experiments' default: real images, 10,000 validation images (one image is
0.01 points, against 0.28 on the digits' 359), and hard enough that variants do not saturate.
The budget is sized so that all six experiments (~30 variants x 5 seeds) fit in the time
``REASONS`` states for a 2-core CPU and every variant's training loss has flattened by the last
epoch (the cosine schedule ends at a learning rate near 0; the tables show the last epoch's
change). A pilot (one seed, 8,000 images, 6 epochs) ended with the no-residual variant's loss
still falling; hence 8 epochs of 10,000 images.
The digits remain as a quick smoke option (``--data digits``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..models.registry import XCEPTION_TINY, build_model, model_config
from ..workarounds import ONEDNN_MIN_CONV_CHANNELS

MODEL = "xception_small"
# xception_tiny's widths, as overrides of xception_small (the name the recorded runs carry)
MODEL_OVERRIDES: dict[str, Any] = {
    f: getattr(XCEPTION_TINY, f) for f in ("stem_channels", "entry_channels", "middle_channels",
                                           "middle_repeats", "exit_channels", "final_channels")}
DEFAULT_DATA = "fashion-mnist"
COMMON: list[str] = [
    # Keras' BatchNorm momentum averages over ~100 steps: evaluate recomputed statistics
    "train.bn_recalibration=8",
]
# Fashion-MNIST: xception_tiny at half width (0.19 M parameters; the same 14-module structure,
# 8 middle blocks): small enough at 28 px that two runs side by side (one thread each) keep
# every experiment within the budget's time
FASHION_WIDTHS = ["model.stem_channels=[8,8]", "model.entry_channels=[16,32,64]",
                  "model.middle_channels=64", "model.exit_channels=[64,128]",
                  "model.final_channels=[128,128]"]
BUDGETS: dict[str, list[str]] = {
    "fashion-mnist": ["data.image_size=28", "data.train_subset=10000", "train.epochs=8",
                      *FASHION_WIDTHS],
    "digits": ["data.train_subset=400", "train.epochs=16"],  # 112 steps of 64 images
}
REASONS = {
    "fashion-mnist": "the 28 px images at their own size; a fixed 10,000-image training subset "
    "(of 60,000), 8 epochs (1,250 steps) and a half-width model keep the six experiments (~30 "
    "variants x 5 seeds) within about four hours of a 2-core CPU (two runs side by side, one "
    "thread each); the cosine schedule ends near lr 0, so each run's training loss flattens "
    "(the last-epoch change is in the table); the full 10,000-image test set is the validation "
    "set (one image = 0.01 points)",
    "digits": "a smoke test: on all 1,438 training digits every variant nears 99%, so a "
    "400-image subset and a short schedule keep the variants apart; 359 validation images "
    "make one image 0.28 points",
}


def budget_overrides(data: str) -> list[str]:
    """The budget's settings for ``data`` (none beyond COMMON for other datasets)."""
    return [*BUDGETS.get(data, []), *COMMON]


def budget_reason(data: str) -> str:
    return REASONS.get(data, "no budget is tuned for this dataset: the run settings as given")


def count_parameters(model: str, overrides: dict[str, Any]) -> int:
    net = build_model(model_config(model, **overrides))
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


@torch.no_grad()
def count_macs(net: torch.nn.Module, image_size: int, in_chans: int) -> int:
    """Multiply-adds of one forward pass on one image (convs and linears, as the paper counts)."""
    from torch.utils.flop_counter import FlopCounterMode  # imports triton: only when counting

    was_training = net.training
    net.eval()
    device = next(net.parameters()).device
    with FlopCounterMode(display=False) as counter:
        net(torch.zeros(1, in_chans, image_size, image_size, device=device))
    net.train(was_training)
    return counter.get_total_flops() // 2


def segment_points(model: str, overrides: dict[str, Any]) -> list[int | None]:
    """1, 2, 4, ... while it divides every separable conv, then None (depthwise)."""
    channels = model_config(model, **overrides).spatial_channels()
    points: list[int | None] = []
    segments = 1
    while all(c % segments == 0 for c in channels) and segments < min(channels):
        points.append(segments)
        segments *= 2
    return [*points, None]


# block2's shortcut sees the stem's width: no scaled width goes below oneDNN's safe minimum
MIN_WIDTH = ONEDNN_MIN_CONV_CHANNELS


def scale_widths(base: dict[str, Any], model: str, factor: float, multiple: int) -> dict[str, Any]:
    """Every channel width times ``factor``, rounded to a multiple of ``multiple``, at least
    ``MIN_WIDTH``."""
    cfg = model_config(model, **base)

    def scaled(width: int) -> int:
        return max(multiple, MIN_WIDTH, round(width * factor / multiple) * multiple)

    return {**base,
            "stem_channels": tuple(scaled(w) for w in cfg.stem_channels),
            "entry_channels": tuple(scaled(w) for w in cfg.entry_channels),
            "middle_channels": scaled(cfg.middle_channels),
            "exit_channels": tuple(scaled(w) for w in cfg.exit_channels),
            "final_channels": tuple(scaled(w) for w in cfg.final_channels)}


def match_parameters(model: str, base: dict[str, Any], variant: dict[str, Any],
                     target: int) -> dict[str, Any]:
    """Widths scaled (bisection on one factor) so the variant has about ``target`` parameters."""
    multiple = max(variant.get("segments") or 1, 4)
    _, overrides = bisect_parameters(
        model, lambda factor: {**scale_widths(base, model, factor, multiple), **variant}, target,
        0.05, 4.0)
    return overrides


def bisect_parameters(model: str, overrides_at: Callable[[float], dict[str, Any]], target: int,
                      low: float, high: float, steps: int = 30) -> tuple[float, dict[str, Any]]:
    """The factor in [low, high] whose overrides give the parameter count nearest ``target``
    (bisection: the count rises with the factor), and those overrides."""
    best: tuple[int, float, dict[str, Any]] | None = None
    for _ in range(steps):
        factor = (low + high) / 2
        trial = overrides_at(factor)
        count = count_parameters(model, trial)
        if best is None or abs(count - target) < abs(best[0] - target):
            best = (count, factor, trial)
        low, high = (factor, high) if count < target else (low, factor)
    assert best is not None
    return best[1], best[2]
