"""Optional TensorBoard logging writes real event files with the per-epoch scalars."""

from __future__ import annotations

import pytest
from conftest import TINY_RUN

from xception.training.config import RunConfig, apply_overrides
from xception.training.fit import fit

event_accumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator")


def test_tensorboard_scalars_match_the_metrics(tmp_path):
    cfg = apply_overrides(RunConfig(), [*TINY_RUN, "data.train_subset=32", "data.val_subset=20",
                                        "train.batch_size=16", "train.epochs=2",
                                        "train.tensorboard=true"])
    result = fit(cfg, tmp_path / "run", log=lambda s: None)
    acc = event_accumulator.EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    acc.Reload()
    scalars = acc.Tags()["scalars"]
    assert "epoch/val_top1" in scalars and "epoch/train_loss" in scalars
    val = [e.value for e in acc.Scalars("epoch/val_top1")]
    assert val == pytest.approx([h["val_top1"] for h in result.history])
