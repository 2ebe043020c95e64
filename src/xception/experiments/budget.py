"""The default experiment budget, per dataset, and what each variant costs (parameters, MACs).

Fashion-MNIST is the experiments' default: real images, 10,000 validation images (one image is
0.01 points, against 0.28 on the digits' 359), and hard enough that variants do not saturate.
The budget is sized so that all six experiments (~30 variants x 5 seeds) fit in about four
hours of a 2-core CPU and every variant's training loss has flattened by the last epoch (the
cosine schedule ends at a learning rate near 0; the tables show the last epoch's change).
Measured in a pilot (one seed, 8,000 images, 6 epochs): residual 84.8%, no residual 79.0%, the
latter's loss still falling by 0.05 per epoch; hence 8 epochs of 10,000 images.
The digits remain as a quick smoke option (``--data digits``).
"""

from __future__ import annotations

from typing import Any

import torch

from ..models.registry import XCEPTION_TINY, build_model, model_config

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
# 8 middle blocks): ~500 img/s per CPU thread at 28 px, so two runs side by side (one thread
# each) finish a run in ~3.5 minutes
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
    m = build_model(model_config(model, **overrides))
    return sum(p.numel() for p in m.parameters() if p.requires_grad)


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
