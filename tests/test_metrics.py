"""top-k, MAP@100 and mAP against cases computed by hand (and mAP against scikit-learn)."""

from __future__ import annotations

import math

import pytest
import torch
from sklearn.metrics import average_precision_score

from xception.metrics import (
    ap_at_k,
    class_ap_sums,
    map_at_k,
    mean_average_precision,
    topk_correct,
    topk_hits_multilabel,
)


def test_topk_correct_hand_cases():
    logits = torch.tensor([[0.1, 0.5, 0.2, 0.9],    # ranking 3,1,2,0
                           [0.8, 0.1, 0.3, 0.2],    # ranking 0,2,3,1
                           [0.2, 0.3, 0.4, 0.1]])   # ranking 2,1,0,3
    target = torch.tensor([3, 3, 0])
    # row0: top-1 hit; row1: target 3 is 3rd; row2: target 0 is 3rd
    assert topk_correct(logits, target, (1, 2, 3, 4)) == [1, 1, 3, 3]
    assert topk_correct(logits, target, (10,)) == [3]   # k > classes counts every row
    with pytest.raises(ValueError):
        topk_correct(logits, target[:2])


def test_topk_multilabel_hand_cases():
    scores = torch.tensor([[0.9, 0.8, 0.1, 0.0], [0.1, 0.2, 0.3, 0.9]])
    targets = torch.tensor([[0, 1, 0, 0], [1, 0, 0, 0]]).float()
    # row0: positive (class 1) is 2nd; row1: positive (class 0) is last
    assert topk_hits_multilabel(scores, targets, (1, 2, 4)) == [0, 1, 2]


def test_ap_at_k_hand_computed():
    # 5 classes; ranking by score: 4, 2, 0, 3, 1
    scores = torch.tensor([[0.3, 0.1, 0.7, 0.2, 0.9]])
    targets = torch.tensor([[1, 0, 1, 0, 0]]).float()     # positives: 0 (rank 3) and 2 (rank 2)
    # AP = (1/2) * (P@2 + P@3) = (1/2) * (1/2 + 2/3) = 7/12
    total, n = ap_at_k(scores, targets, k=100)
    assert n == 1 and total == pytest.approx(7 / 12)
    # top-2 only: class 0 falls out; Z = min(|Y|, 2) = 2 -> (1/2) * (1/2) = 1/4
    assert map_at_k(scores, targets, k=2) == pytest.approx(1 / 4)
    # k=1: nothing relevant at rank 1 -> 0
    assert map_at_k(scores, targets, k=1) == 0.0


def test_ap_at_k_weights_and_image_without_labels():
    scores = torch.tensor([[0.3, 0.1, 0.7, 0.2, 0.9],
                           [0.9, 0.8, 0.7, 0.6, 0.5],
                           [0.5, 0.4, 0.3, 0.2, 0.1]])
    targets = torch.tensor([[1, 0, 1, 0, 0],
                            [1, 1, 0, 0, 0],            # perfect ranking -> AP 1
                            [0, 0, 0, 0, 0]]).float()   # no positives -> left out of the mean
    total, n = ap_at_k(scores, targets, 100)
    assert n == 2 and total == pytest.approx(7 / 12 + 1)
    assert map_at_k(scores, targets) == pytest.approx((7 / 12 + 1) / 2)
    # weights: class 0 counts 3, class 2 counts 1. Row 0: hits at rank 2 (class 2, w=1, P=1/2) and
    # rank 3 (class 0, w=3, P=2/3); Z = 3 + 1 -> (0.5 + 2) / 4 = 0.625. Row 1: hits at ranks 1, 2
    # with P = 1: (3 + 1) / (3 + 1) = 1.
    w = torch.tensor([3.0, 1.0, 1.0, 1.0, 1.0])
    total, n = ap_at_k(scores, targets, 100, w)
    assert n == 2 and total == pytest.approx(0.625 + 1.0)
    # weights pick Z's top entries: 3 positives, k=2 -> Z = the two largest positive weights
    t = torch.tensor([[1, 1, 1, 0, 0]]).float()
    s = torch.tensor([[0.1, 0.2, 0.9, 0.8, 0.7]])  # ranking 2, 3, 4, 1, 0: only class 2 in top 2
    w2 = torch.tensor([5.0, 2.0, 1.0, 1.0, 1.0])
    assert map_at_k(s, t, 2, w2) == pytest.approx(1.0 * 1.0 / (5 + 2))
    with pytest.raises(ValueError):
        ap_at_k(scores, targets, 100, torch.tensor([1.0, -1.0, 1, 1, 1]))


def test_ap_at_k_ties_rank_lower_class_first():
    scores = torch.zeros(1, 4)
    targets = torch.tensor([[0, 0, 0, 1]]).float()   # all tied -> class 3 is 4th: AP = 1/4
    assert map_at_k(scores, targets) == pytest.approx(0.25)


def test_map_at_k_nan_without_positives():
    assert math.isnan(map_at_k(torch.rand(2, 3), torch.zeros(2, 3)))


def test_mean_average_precision_hand_and_sklearn():
    scores = torch.tensor([[0.9, 0.1], [0.8, 0.7], [0.3, 0.2], [0.1, 0.6]])
    targets = torch.tensor([[1, 0], [0, 1], [1, 0], [0, 0]]).float()
    # class 0: images ranked 0,1,2,3; positives at ranks 1 and 3 -> (1 + 2/3) / 2 = 5/6
    # class 1: ranked 1,3,2,0; positive at rank 1 -> 1
    assert mean_average_precision(scores, targets) == pytest.approx((5 / 6 + 1) / 2)
    g = torch.Generator().manual_seed(0)
    s = torch.rand(50, 7, generator=g)
    t = (torch.rand(50, 7, generator=g) < 0.3).float()
    ref = average_precision_score(t.numpy(), s.numpy(), average="macro")
    assert mean_average_precision(s, t) == pytest.approx(ref, rel=1e-9)


def test_class_ap_sums_add_over_chunks_and_class_blocks():
    g = torch.Generator().manual_seed(1)
    s = torch.rand(40, 11, generator=g)
    t = (torch.rand(40, 11, generator=g) < 0.25).to(torch.uint8)
    t[:, 4] = 0  # a class without positives is left out of the mean
    total, count = class_ap_sums(s, t)
    assert count == 10
    for chunk in (1, 3, 11):
        assert class_ap_sums(s, t, chunk=chunk)[0] == pytest.approx(total, rel=1e-12)
    left, right = class_ap_sums(s[:, :5], t[:, :5]), class_ap_sums(s[:, 5:], t[:, 5:])
    assert left[0] + right[0] == pytest.approx(total, rel=1e-12) and left[1] + right[1] == 10
    ref = average_precision_score(t[:, [c for c in range(11) if c != 4]].numpy(),
                                  s[:, [c for c in range(11) if c != 4]].numpy(), average="macro")
    assert total / count == pytest.approx(ref, rel=1e-9)
