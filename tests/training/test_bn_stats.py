"""BatchNorm statistics recomputed before evaluation (train.bn_recalibration): exact averages,
no effect on the training trajectory or the random streams, and it removes the lag it is for."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import TINY, TINY_RUN
from torch import nn

from xception.config import RunConfig, apply_overrides
from xception.data import make_loader
from xception.data.datasets import ImageDataset, TensorSource
from xception.errors import ConfigError
from xception.training.bn_stats import FixedBatches, recalibrate, recalibration_loader
from xception.training.fit import fit


def _images(n: int = 40) -> ImageDataset:
    gen = torch.Generator().manual_seed(1)
    images = 3 + 2 * torch.randn(n, 3, 6, 6, generator=gen)
    return ImageDataset(TensorSource(images, [i % 4 for i in range(n)]), None, 4)


def test_recalibration_is_the_average_of_the_batch_statistics():
    ds = _images()
    net = nn.Sequential(nn.Conv2d(3, 5, 3), nn.BatchNorm2d(5, momentum=0.01))
    loader = recalibration_loader(ds, batch=8, batches=3, seed=0)
    rng = torch.get_rng_state()
    seen = recalibrate(net.eval(), loader, epoch=2, device=torch.device("cpu"))
    assert torch.equal(torch.get_rng_state(), rng)  # draws nothing from the global stream
    assert seen == 24 and not net.training and net[1].momentum == 0.01
    feats = [net[0](b.x) for b in make_loader(ds, 8, batch_sampler=FixedBatches(40, 8, 3, 0))]
    mean = torch.stack([f.mean((0, 2, 3)) for f in feats]).mean(0)
    var = torch.stack([f.transpose(0, 1).flatten(1).var(1) for f in feats]).mean(0)
    torch.testing.assert_close(net[1].running_mean, mean)
    torch.testing.assert_close(net[1].running_var, var)
    assert int(net[1].num_batches_tracked) == 3


def test_fixed_batches_are_fixed_and_keyed_by_epoch():
    s = FixedBatches(30, 8, 10, seed=3)
    assert len(s) == 4 and sorted(i for b in s for _, i in b) == list(range(30))
    first = list(s)
    s.set_epoch(5)
    assert [[i for _, i in b] for b in s] == [[i for _, i in b] for b in first]
    assert {e for b in s for e, _ in b} == {5}
    assert list(FixedBatches(30, 8, 2, seed=4)) != first[:2]  # another seed, other images


def _run(*sets: str) -> RunConfig:
    model = [f"model.{k}={json.dumps(list(v) if isinstance(v, tuple) else v)}"
             for k, v in TINY.items()]
    return apply_overrides(RunConfig(), [*TINY_RUN, *model, "data.train_subset=400",
                                         "train.epochs=2", "optimizer.lr=0.1", *sets])


def test_recalibration_changes_the_evaluation_not_the_training():
    plain = fit(_run(), None, log=lambda _: None)
    recal = fit(_run("train.bn_recalibration=4"), None, log=lambda _: None)
    # the same weights and training losses: training never reads the running statistics
    assert [h["train_loss"] for h in plain.history] == [h["train_loss"] for h in recal.history]
    for (name, p), q in zip(plain.model.named_parameters(), recal.model.parameters(), strict=True):
        assert torch.equal(p, q), name
    # with Keras' momentum (0.01) the running statistics after 2 x 6 steps still describe the
    # initial weights: the plain evaluation guesses (near 10%); the recalibrated one has learned
    assert plain.history[0]["val_top1"] < 0.2
    assert recal.history[0]["val_top1"] > plain.history[0]["val_top1"] + 0.2
    assert recal.history[-1]["val_top1"] > 0.3  # 3x chance after 12 steps


def test_recalibration_rejects_a_negative_count():
    with pytest.raises(ConfigError, match="bn_recalibration"):
        apply_overrides(RunConfig(), ["train.bn_recalibration=-1"])
