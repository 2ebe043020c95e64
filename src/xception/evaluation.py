"""One evaluation pass: loss, top-1/top-5 and, for multi-label data, MAP@100 and mAP.

Shared by training (every epoch) and by ``inference`` (saved weights), so using a model never
needs the trainer. Under torchrun every process evaluates its own disjoint shard of the
validation set and the sums are all-reduced: no image is counted twice.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from .distributed import DistContext, all_sum, any_rank, gather_rows
from .metrics import ap_at_k, class_ap_sums, topk_correct, topk_hits_multilabel


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """``auto``: bf16 on a CUDA GPU that has it, else full fp32."""
    if precision == "auto":
        ok = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if ok else None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def loss_sum(logits: torch.Tensor, y: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Summed over the batch: softmax cross-entropy, or for multi-hot targets the sigmoid binary
    cross-entropy summed over classes (the paper's JFT loss)."""
    logits = logits.float()
    if y.dim() == 2:
        return F.binary_cross_entropy_with_logits(logits, y, reduction="sum")
    return F.cross_entropy(logits, y, reduction="sum", label_smoothing=label_smoothing)


@torch.inference_mode()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device,
             channels_last: bool = False, *, ctx: DistContext | None = None,
             dtype: torch.dtype | None = None, class_weights: tuple[float, ...] | None = None,
             map_k: int = 100) -> dict[str, float]:
    """Loss, top-1, top-5 over this process's shard, summed over all processes (no image twice).

    Multi-label data adds ``map100`` (MAP@100, per image) and ``map`` (per-class mAP).
    """
    ctx = ctx or DistContext()
    model.eval()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    loss, c1, c5, seen, bad, ap, ap_n = 0.0, 0, 0, 0, 0, 0.0, 0
    scores, targets = [], []
    weights = None if class_weights is None else torch.tensor(class_weights, dtype=torch.float64)
    multi = False
    for batch in loader:
        bad += len(batch.bad)
        if batch.x is None:
            continue
        x = batch.x.to(device, non_blocking=True, memory_format=fmt)
        y = batch.y.to(device, non_blocking=True)
        with autocast(device, dtype):
            logits = model(x)
        logits = logits.float()
        loss += float(loss_sum(logits, y))
        if y.dim() == 2:
            multi = True
            a, b = topk_hits_multilabel(logits, y, (1, 5))
            s, n = ap_at_k(logits.cpu(), y.cpu(), map_k, weights)
            ap, ap_n = ap + s, ap_n + n
            scores.append(logits.cpu())
            targets.append(y.cpu())
        else:
            a, b = topk_correct(logits, y, (1, 5))
        c1, c5, seen = c1 + a, c5 + b, seen + len(y)
    multi = any_rank(ctx, [multi])[0]
    loss, c1, c5, seen, bad, ap, ap_n = all_sum(ctx, [loss, c1, c5, seen, bad, ap, ap_n])
    n = max(seen, 1)
    out = {"loss": loss / n, "top1": c1 / n, "top5": c5 / n, "count": int(seen), "bad": int(bad)}
    if multi:
        out["map100"] = ap / ap_n if ap_n else float("nan")
        if scores:
            s_all, t_all = torch.cat(scores), torch.cat(targets).to(torch.uint8)
        else:
            c = getattr(loader.dataset, "num_classes", 0)
            s_all, t_all = torch.zeros(0, c), torch.zeros(0, c, dtype=torch.uint8)
        out["map"] = _sharded_map(ctx, s_all, t_all)
    return out


def _sharded_map(ctx: DistContext, scores: torch.Tensor, targets: torch.Tensor) -> float:
    """Per-class mAP over every rank's images: rank j gathers the images' scores for the j-th
    block of classes only, so no process ever holds all images x all classes."""
    blocks = torch.arange(scores.shape[1]).tensor_split(ctx.world_size)
    total, count = 0.0, 0
    for j, cols in enumerate(blocks):
        s = gather_rows(ctx, scores[:, cols].contiguous())
        t = gather_rows(ctx, targets[:, cols].contiguous())
        if j == ctx.rank and len(cols):
            total, count = class_ap_sums(s.cpu(), t.cpu())
    total, count = all_sum(ctx, [total, count])
    return total / count if count else float("nan")
