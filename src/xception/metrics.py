"""Classification metrics, counted (not averaged) so they sum correctly across batches and ranks.

Single-label: ``topk_correct``. Multi-label (JFT-style): ``topk_hits_multilabel``, the paper's
MAP@100 (``ap_at_k`` per image, summed; ``map_at_k`` for a whole set) and plain per-class mAP.

MAP@K, as PAPER.md defines it ("mean average precision over each image's top-K predictions, each
class weighted by how common it is"), exactly as computed here: for an image with positive classes
Y, rank all classes by score (ties: lower class index first) and keep the top K, c_1..c_K. With
rel_j = [c_j in Y], P@j = (rel_1 + ... + rel_j) / j and per-class weights w (all 1 by default),

    AP@K = sum_j w[c_j] * rel_j * P@j  /  Z,   Z = sum of the min(|Y|, K) largest w[c] over c in Y.

With unit weights this is the usual AP@K (Z = min(|Y|, K)); a perfect ranking scores 1. Images
without positives (or whose positives all weigh 0) have no AP and are left out of the mean.
MAP@K = the mean of AP@K over the images that have one.
"""

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


def _check_multilabel(scores: torch.Tensor, targets: torch.Tensor) -> None:
    if scores.dim() != 2 or targets.shape != scores.shape:
        raise ValueError(f"expected scores (N, C) and multi-hot targets (N, C), got "
                         f"{tuple(scores.shape)} and {tuple(targets.shape)}")


def _ranking(scores: torch.Tensor) -> torch.Tensor:
    """Class indices by descending score per row; ties keep the lower index first."""
    return torch.sort(scores, dim=1, descending=True, stable=True).indices


def topk_hits_multilabel(scores: torch.Tensor, targets: torch.Tensor,
                         ks: tuple[int, ...] = (1, 5)) -> list[int]:
    """How many rows have at least one positive class among their top k, for each k."""
    _check_multilabel(scores, targets)
    kmax = min(max(ks), scores.shape[1])
    top = scores.topk(kmax, dim=1).indices
    rel = targets.gather(1, top) > 0
    return [int(rel[:, :min(k, kmax)].any(dim=1).sum()) for k in ks]


def ap_at_k(scores: torch.Tensor, targets: torch.Tensor, k: int = 100,
            class_weights: torch.Tensor | None = None) -> tuple[float, int]:
    """(sum of AP@k over the images that have one, how many images have one); see the module doc.

    A sum and a count, so batches and processes combine by adding.
    """
    _check_multilabel(scores, targets)
    scores, positive = scores.double(), targets > 0
    n, c = scores.shape
    w = torch.ones(c, dtype=torch.float64, device=scores.device) if class_weights is None else \
        torch.as_tensor(class_weights, dtype=torch.float64, device=scores.device)
    if w.shape != (c,) or bool((w < 0).any()):
        raise ValueError(f"class_weights must be {c} non-negative numbers, got shape {tuple(w.shape)}")
    k = min(k, c)
    top = _ranking(scores)[:, :k]
    rel = positive.gather(1, top).double()
    precision = rel.cumsum(1) / torch.arange(1, k + 1, dtype=torch.float64, device=scores.device)
    gained = (w[top] * rel * precision).sum(1)
    # Z: the largest min(|Y|, k) weights among each image's positives
    pos_w = torch.where(positive, w.expand(n, c), torch.zeros((), dtype=torch.float64,
                                                              device=scores.device))
    best = pos_w.sort(dim=1, descending=True).values[:, :k]
    n_pos = positive.sum(1).clamp(max=k)
    keep = torch.arange(k, device=scores.device).unsqueeze(0) < n_pos.unsqueeze(1)
    z = (best * keep).sum(1)
    has = z > 0
    return float((gained[has] / z[has]).sum()), int(has.sum())


def map_at_k(scores: torch.Tensor, targets: torch.Tensor, k: int = 100,
             class_weights: torch.Tensor | None = None) -> float:
    """MAP@k of a whole set (NaN when no image has a positive class)."""
    total, count = ap_at_k(scores, targets, k, class_weights)
    return total / count if count else float("nan")


def class_ap_sums(scores: torch.Tensor, targets: torch.Tensor, chunk: int = 512) -> tuple[float, int]:
    """Sum of the per-class average precisions over classes with >= 1 positive, and how many such
    classes there are: ranks all images by each class's score (ties: lower image index first).
    Classes go ``chunk`` at a time, so memory grows with ``chunk`` x images, not classes x images;
    sums over disjoint class blocks add up (how evaluation splits the classes across ranks)."""
    _check_multilabel(scores, targets)
    total, count = 0.0, 0
    ranks = torch.arange(1, scores.shape[0] + 1, dtype=torch.float64, device=scores.device)
    for lo in range(0, scores.shape[1], chunk):
        s = scores[:, lo:lo + chunk].double().t()
        order = torch.sort(s, dim=1, descending=True, stable=True).indices
        rel = (targets[:, lo:lo + chunk].t() > 0).gather(1, order).double()   # ranked order
        n_pos = rel.sum(1)
        ap = (rel * rel.cumsum(1) / ranks).sum(1)
        has = n_pos > 0
        total, count = total + float((ap[has] / n_pos[has]).sum()), count + int(has.sum())
    return total, count


def mean_average_precision(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """Plain (macro) mAP: the mean over classes with >= 1 positive of the non-interpolated average
    precision of ranking all images by that class's score (ties: lower image index first)."""
    total, count = class_ap_sums(scores, targets)
    return total / count if count else float("nan")
