"""Classification metrics, counted (not averaged) so they sum correctly across batches and ranks."""

from __future__ import annotations

import torch


def topk_correct(logits: torch.Tensor, target: torch.Tensor,
                 ks: tuple[int, ...] = (1, 5)) -> list[int]:
    """How many rows have their target among the k highest logits, for each k.

    k larger than the number of classes counts every row (the target is always among them).
    """
    if logits.dim() != 2 or target.shape != logits.shape[:1]:
        raise ValueError(f"expected logits (N, C) and targets (N,), got {tuple(logits.shape)} "
                         f"and {tuple(target.shape)}")
    kmax = min(max(ks), logits.shape[1])
    top = logits.topk(kmax, dim=1).indices
    hit = top.eq(target.unsqueeze(1))
    return [int(hit[:, :min(k, kmax)].any(dim=1).sum()) for k in ks]
