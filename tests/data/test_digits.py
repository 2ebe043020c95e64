"""The embedded digits: read without scikit-learn's import, jittered in batches, same either way."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import torch

from xception.config import RunConfig
from xception.data import TrainBatches, build_datasets, make_loader
from xception.data.builtin import read_digits
from xception.data.images import DigitsJitter


def test_digits_equal_scikit_learns_loader():
    from sklearn.datasets import load_digits

    images, labels = read_digits()
    ref = load_digits()
    assert np.array_equal(images, ref.images) and np.array_equal(labels, ref.target)


def test_building_the_digits_imports_neither_sklearn_nor_torchvision():
    code = ("import sys; from xception.data import build_datasets; "
            "from xception.config import RunConfig; build_datasets(RunConfig().data); "
            "print(sorted(m for m in ('sklearn', 'torchvision') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_jitter_geometry():
    x = -torch.ones(1, 1, 32, 32)
    x[..., 12:20, 12:20] = 1.0  # a bright square in the middle
    identity = DigitsJitter(degrees=0, translate=0, scale=(1.0, 1.0))
    assert torch.allclose(identity.batch(x, [7]), x, atol=1e-6)
    shift = DigitsJitter(degrees=0, translate=0.1, scale=(1.0, 1.0))
    moved = shift.batch(x, [1])
    assert not torch.allclose(moved, x)
    # a pure shift keeps the square's area (bilinear, away from the border) and the background
    assert abs(float((moved + 1).sum() - (x + 1).sum())) < 1e-3
    assert moved[..., 0, 0].item() == -1.0
    zoom = DigitsJitter(degrees=0, translate=0, scale=(1.1, 1.1)).batch(x, [0])
    assert float((zoom + 1).sum()) > float((x + 1).sum())  # zoomed in: the square grows


def test_batched_jitter_equals_per_item_and_follows_seed_epoch_index():
    train, _, _ = build_datasets(RunConfig().data, seed=3)
    keys = [(2, i) for i in range(0, 40, 3)]
    batched = train.__getitems__(keys)
    for (img, target), key in zip(batched, keys, strict=True):
        one, t = train[key]
        assert torch.equal(img, one) and t == target
    assert not torch.equal(train[(3, 0)][0], train[(2, 0)][0])  # another epoch, another jitter
    assert torch.equal(train[(2, 0)][0], train.with_seed(3)[(2, 0)][0])
    sampler = TrainBatches(len(train), 16, seed=3)
    sampler.set_epoch(1)
    one = [b.x for b in make_loader(train, 16, batch_sampler=sampler)]
    two = [b.x for b in make_loader(train, 16, batch_sampler=sampler, num_workers=2)]
    assert len(one) == sampler.steps_per_epoch == 90  # 89 full batches and 14 left over
    assert all(torch.equal(p, q) for p, q in zip(one, two, strict=True))
