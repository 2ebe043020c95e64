"""The default experiment budget and what each variant costs (parameters, multiply-adds).

The default is sized so one experiment (all variants x 3 seeds) finishes in about ten minutes on
2 CPU cores, and so that the digits do not saturate: every variant at ~99% would hide any effect.
Hence a narrower model than ``xception_small`` (same 14-module structure, 8 middle blocks), a
400-image training subset and a short schedule.
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
RUN_OVERRIDES: list[str] = [
    "data.train_subset=400",   # of the 1,438 training digits; validation stays the full 359
    "train.epochs=16",         # 112 optimizer steps of 64 images
]


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
