"""``TrainState``: what a checkpoint holds gives back every part exactly, and under torchrun each
process gets its own random stream back while the epoch sums are counted once."""

from __future__ import annotations

import copy
import random

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from xception.config import RunConfig, apply_overrides
from xception.data import Batch
from xception.distributed import DistContext
from xception.training import state as state_module
from xception.training.checkpoint import load_checkpoint, save_checkpoint
from xception.training.engine import Engine, make_ema, train_step
from xception.training.state import Progress, TrainState, warn_changed_settings

DATA = torch.Generator().manual_seed(0)
BATCHES = [Batch(torch.randn(6, 2, 5, 5, generator=DATA), torch.randint(0, 3, (6,), generator=DATA), [])
           for _ in range(5)]
SUMS = {"loss_sum": 1.5, "correct": 4.0, "seen": 12.0, "bad": 1.0, "skipped": 1.0}


def _state(seed: int, ctx: DistContext | None = None) -> TrainState:
    """Every part with state: BatchNorm buffers, dropout, SGD momentum, a schedule, a gradient
    scaler that grows every 2 steps, an EMA."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.9 ** step)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 8, growth_interval=2)
    return TrainState(model=model, optimizer=opt, scheduler=sched, scaler=scaler,
                      ema=make_ema(model, 0.9), ctx=ctx or DistContext())


def _train(state: TrainState, steps: int) -> None:
    eng = Engine(state=state, input_shape=(2, 5, 5), num_classes=3)
    for t in range(steps):
        train_step(eng, [BATCHES[t % len(BATCHES)]], global_size=6)


def _draws() -> tuple:
    return torch.rand(4).tolist(), random.random(), np.random.rand()


def _assert_same(a, b, where: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def test_a_loaded_state_is_the_saved_one_and_continues_exactly(tmp_path):
    a = _state(seed=0)
    _train(a, 3)
    a.progress = Progress(epoch=2, step_in_epoch=3, global_step=7, nonfinite_streak=1, **SUMS)
    a.history.append({"epoch": 1, "val_top1": 0.5})
    random.seed(5)
    np.random.seed(5)
    saved = a.state_dict()
    save_checkpoint(tmp_path, saved)  # through a file: every part survives weights_only loading
    saved = copy.deepcopy(saved)      # (it holds the live tensors of ``a``)
    _train(a, 2)                      # the original goes on: dropout, momentum, LR, scale, EMA
    after = (copy.deepcopy(a.state_dict()), _draws())

    torch.manual_seed(9)              # a fresh state: other weights, other random streams
    random.seed(9)
    np.random.seed(9)
    b = _state(seed=1)
    b.load_state_dict(load_checkpoint(tmp_path))
    _assert_same(saved, b.state_dict(), "loaded")
    assert b.progress == Progress(epoch=2, step_in_epoch=3, global_step=7, nonfinite_streak=1,
                                  **SUMS)
    assert b.history == [{"epoch": 1, "val_top1": 0.5}]
    _train(b, 2)
    _assert_same(after, (b.state_dict(), _draws()), "continued")


def test_each_rank_takes_its_own_random_stream_and_only_rank_0_the_sums():
    d = _state(0).state_dict()
    d["progress"] |= SUMS | {"global_step": 7}
    streams = [torch.Generator().manual_seed(100 + r).get_state() for r in range(2)]
    d |= {"world_size": 2, "rng": d["rng"] | {"torch": streams}}
    for rank in (0, 1):
        s = _state(0, DistContext(rank=rank, world_size=2))
        torch.manual_seed(7)
        s.load_state_dict(d)
        assert torch.equal(torch.get_rng_state(), streams[rank])
        assert s.progress.global_step == 7
        assert s.progress.sums() == (list(SUMS.values()) if rank == 0 else [0.0] * 5)


def test_another_world_size_warns_and_leaves_the_random_streams():
    d = _state(0).state_dict() | {"world_size": 2, "ema": None}
    s = _state(0)
    torch.manual_seed(7)
    before = torch.get_rng_state()
    warnings: list[str] = []
    s.load_state_dict(d, warn=warnings.append)
    assert torch.equal(torch.get_rng_state(), before)
    assert any("written by 2 process(es), this run has 1" in w for w in warnings)
    assert any("no EMA weights" in w for w in warnings)


def test_the_saved_dict_sums_over_processes_and_holds_every_rank_stream(monkeypatch):
    """Rank 1 of 2, with the collectives stood in for (the real ones: the slow test below)."""
    other = torch.Generator().manual_seed(3).get_state()
    monkeypatch.setattr(state_module, "all_sum", lambda ctx, v: [x + 10.0 for x in v])
    monkeypatch.setattr(state_module, "gather_tensors", lambda ctx, x: [other, x.cpu()])
    s = _state(0, DistContext(rank=1, world_size=2))
    s.progress.loss_sum = 1.0
    torch.manual_seed(4)
    mine = torch.get_rng_state()
    d = s.state_dict()
    assert d["world_size"] == 2 and d["progress"]["loss_sum"] == 11.0
    assert d["progress"]["seen"] == 10.0 and d["progress"]["epoch"] == 1
    assert torch.equal(d["rng"]["torch"][0], other) and torch.equal(d["rng"]["torch"][1], mine)


def test_changed_settings_are_named_on_resume_unless_safe():
    cfg = RunConfig()
    warnings: list[str] = []
    safe = apply_overrides(cfg, ["train.epochs=50", "data.num_workers=3", "train.max_steps=9"])
    warn_changed_settings(cfg.to_json(), safe, warnings.append)
    assert warnings == []
    warn_changed_settings(cfg.to_json(), apply_overrides(cfg, ["optimizer.lr=0.5"]),
                          warnings.append)
    assert len(warnings) == 1 and "['optimizer.lr']" in warnings[0]


def _two_ranks(rank: int, init: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        ctx = DistContext(rank, 2, rank, torch.device("cpu"), True)
        s = _state(0, ctx)
        s.progress.loss_sum, s.progress.seen = rank + 1.0, 10.0 * (rank + 1)
        torch.manual_seed(50 + rank)
        mine = torch.get_rng_state()
        d = s.state_dict()
        assert (d["progress"]["loss_sum"], d["progress"]["seen"]) == (3.0, 30.0)
        assert len(d["rng"]["torch"]) == 2 and torch.equal(d["rng"]["torch"][rank], mine)
        torch.manual_seed(999)
        t = _state(0, ctx)
        t.load_state_dict(d)
        assert torch.equal(torch.get_rng_state(), mine)
        assert t.progress.loss_sum == (3.0 if rank == 0 else 0.0)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two processes start and import torch: 10-30 s on 2 shared cores
def test_two_processes_sum_the_sums_and_keep_their_own_streams(tmp_path):
    mp.spawn(_two_ranks, args=(f"file://{tmp_path / 'group'}",), nprocs=2)
