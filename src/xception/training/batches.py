"""The run's data: its training and validation sets (rank 0 downloads first) and the loaders
that give each process its share of every global step."""

from __future__ import annotations

from dataclasses import dataclass

from torch.utils.data import DataLoader, Dataset

from ..config import RunConfig
from ..data import DatasetInfo, EvalBatches, Splits, TrainBatches, build_splits, make_loader
from ..data.loading import shutdown_workers
from ..distributed import DistContext, barrier
from ..errors import DataError
from .bn_stats import recalibration_loader


def build_run_splits(cfg: RunConfig, ctx: DistContext) -> Splits:
    """Training, validation (and a held-out run's test) sets (rank 0 downloads first)."""
    if cfg.data.download and not ctx.is_main:
        barrier(ctx)  # rank 0 downloads first
    splits = build_splits(cfg.data, cfg.train.seed)
    if cfg.data.download and ctx.is_main:
        barrier(ctx)
    return splits


@dataclass
class RunData:
    """The training batches (this process's share of each global step), the validation shard
    and, where the validation images were held out of the training set, the test shard."""

    info: DatasetInfo
    sampler: TrainBatches
    train: DataLoader
    val: DataLoader
    recal: DataLoader | None = None  # train.bn_recalibration's fixed training batches
    test: DataLoader | None = None   # data.val_holdout: the test split, evaluated once at the end

    @classmethod
    def build(cls, cfg: RunConfig, ctx: DistContext, splits: Splits) -> RunData:
        train_ds, val_ds, info = splits.train, splits.val, splits.info
        train_cfg, world = cfg.train, ctx.world_size
        batch, accum = train_cfg.batch_size, train_cfg.accum_steps
        sampler = TrainBatches(len(train_ds), batch, world, ctx.rank, accum, seed=train_cfg.seed)
        if sampler.steps_per_epoch == 0:  # the sampler's own limit: BatchNorm needs 2 per part
            raise DataError(f"{len(train_ds)} training images are too few for a global batch of "
                            f"{batch} split {world * accum} ways (each part needs >= 2 images)")
        loader_kw = {"num_workers": cfg.data.num_workers, "prefetch_factor": cfg.data.prefetch_factor}
        train = make_loader(train_ds, batch, batch_sampler=sampler, **loader_kw)
        eval_batch = train_cfg.eval_batch_size

        def shard(dataset: Dataset) -> DataLoader:
            return make_loader(dataset, eval_batch, **loader_kw, batch_sampler=EvalBatches(
                len(dataset), eval_batch, world, ctx.rank))

        val = shard(val_ds)
        test = shard(splits.test) if splits.test is not None else None
        recal = None
        if train_cfg.bn_recalibration:  # each process's BatchNorm sees micro-batches of this size
            recal = recalibration_loader(train_ds, max(2, batch // (world * accum)),
                                         train_cfg.bn_recalibration, train_cfg.seed)
        return cls(info, sampler, train, val, recal, test)

    def close(self) -> None:
        """End the loaders' worker processes (persistent ones would outlive the run)."""
        for loader in (self.train, self.val, self.test):  # the recalibration loader has none
            if loader is not None:
                shutdown_workers(loader)
