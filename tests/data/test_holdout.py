"""A validation split held out of the training images (``data.val_holdout``): fixed, stratified,
disjoint from training, not augmented; the test split is then evaluated once, at the end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import TINY_RUN
from idx_helpers import write_set

from xception.config import RunConfig, apply_overrides
from xception.data import build_splits
from xception.data.builtin import holdout_indices
from xception.errors import ConfigError, DataError
from xception.training import fit


def test_holdout_is_stratified_exact_and_fixed_by_the_seed():
    labels = np.repeat(np.arange(10), [50, 50, 50, 50, 50, 50, 50, 50, 30, 70])
    rest, held = holdout_indices(labels, 50, seed=3)
    assert len(held) == 50 and len(rest) == 450 and not set(rest) & set(held)
    assert sorted(np.bincount(labels[held], minlength=10)) == [3, *[5] * 8, 7]
    again, _ = holdout_indices(labels, 50, seed=3)
    other, _ = holdout_indices(labels, 50, seed=4)
    assert np.array_equal(rest, again) and not np.array_equal(rest, other)
    with pytest.raises(DataError, match="val_holdout=500 must be between 1 and the 500"):
        holdout_indices(labels, 500, seed=0)


def _splits(tmp_path, *sets):
    write_set(tmp_path, n_train=60, n_val=20)
    cfg = apply_overrides(RunConfig(), ["data.name=fashion-mnist", f"data.root={tmp_path}",
                                        "data.image_size=16", *sets])
    return cfg, build_splits(cfg.data, seed=0)


def test_the_held_out_split_comes_from_the_training_images_without_augmentation(tmp_path):
    _, plain = _splits(tmp_path)
    assert plain.test is None and len(plain.train) == 60 and len(plain.val) == 20
    _, splits = _splits(tmp_path, "data.val_holdout=10")
    assert (len(splits.train), len(splits.val), len(splits.test)) == (50, 10, 20)
    assert not set(splits.train.indices) & set(splits.val.indices)
    assert splits.val.source is splits.train.source      # training images ...
    assert splits.val.transform is None                  # ... read without the jitter
    assert all(torch.equal(splits.test[i][0], plain.val[i][0]) for i in range(len(plain.val)))
    first = [splits.val[i][0] for i in range(3)]
    assert all(torch.equal(a, splits.val[i][0]) for i, a in enumerate(first))  # no randomness


def test_holdout_needs_a_test_split_and_a_sane_count(tmp_path):
    with pytest.raises(DataError, match="val_holdout applies to fashion-mnist"):
        build_splits(apply_overrides(RunConfig(), ["data.val_holdout=100"]).data)
    with pytest.raises(ConfigError, match="data.val_holdout must be >= 0"):
        apply_overrides(RunConfig(), ["data.val_holdout=-1"])


def test_a_held_out_run_reports_the_test_split_once_at_the_end(tmp_path):
    write_set(tmp_path / "fm", n_train=80, n_val=30)
    cfg = apply_overrides(RunConfig(), [*TINY_RUN, "data.name=fashion-mnist",
                                        f"data.root={tmp_path / 'fm'}", "data.val_holdout=20",
                                        "train.epochs=2", "train.batch_size=20"])
    logs = []
    result = fit(cfg, tmp_path / "run", log=logs.append)
    first, last = result.history
    assert not any(k.startswith("test_") for k in first)   # not seen while training
    assert {"test_loss", "test_top1", "test_top5"} <= set(last)
    assert first["val_count"] == 20 and sum("test (once" in line for line in logs) == 1
    saved = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert saved[-1]["test_top1"] == last["test_top1"]
