"""The run's data: its training and validation sets (rank 0 downloads first) and the loaders
that give each process its share of every global step."""

from __future__ import annotations

from dataclasses import dataclass

from torch.utils.data import DataLoader, Dataset

from ..config import RunConfig
from ..data import DatasetInfo, EvalBatches, TrainBatches, build_datasets, make_loader
from ..data.loading import shutdown_workers
from ..distributed import DistContext, barrier
from ..errors import DataError
from .bn_stats import recalibration_loader


def build_run_datasets(cfg: RunConfig, ctx: DistContext) -> tuple[Dataset, Dataset, DatasetInfo]:
    """Training and validation sets and their description (rank 0 downloads first)."""
    if cfg.data.download and not ctx.is_main:
        barrier(ctx)  # rank 0 downloads first
    train_ds, val_ds, info = build_datasets(cfg.data, cfg.train.seed)
    if cfg.data.download and ctx.is_main:
        barrier(ctx)
    return train_ds, val_ds, info


@dataclass
class RunData:
    """The training batches (this process's share of each global step) and the validation shard."""

    info: DatasetInfo
    sampler: TrainBatches
    train: DataLoader
    val: DataLoader
    recal: DataLoader | None = None  # train.bn_recalibration's fixed training batches

    @classmethod
    def build(cls, cfg: RunConfig, ctx: DistContext, train_ds: Dataset, val_ds: Dataset,
              info: DatasetInfo) -> RunData:
        train_cfg, world = cfg.train, ctx.world_size
        batch, accum = train_cfg.batch_size, train_cfg.accum_steps
        sampler = TrainBatches(len(train_ds), batch, world, ctx.rank, accum, seed=train_cfg.seed)
        if sampler.steps_per_epoch == 0:  # the sampler's own limit: BatchNorm needs 2 per part
            raise DataError(f"{len(train_ds)} training images are too few for a global batch of "
                            f"{batch} split {world * accum} ways (each part needs >= 2 images)")
        loader_kw = {"num_workers": cfg.data.num_workers, "prefetch_factor": cfg.data.prefetch_factor}
        train = make_loader(train_ds, batch, batch_sampler=sampler, **loader_kw)
        eval_batch = train_cfg.eval_batch_size
        val = make_loader(val_ds, eval_batch,
                          batch_sampler=EvalBatches(len(val_ds), eval_batch, world, ctx.rank),
                          **loader_kw)
        recal = None
        if train_cfg.bn_recalibration:  # each process's BatchNorm sees micro-batches of this size
            recal = recalibration_loader(train_ds, max(2, batch // (world * accum)),
                                         train_cfg.bn_recalibration, train_cfg.seed)
        return cls(info, sampler, train, val, recal)

    def close(self) -> None:
        """End the loaders' worker processes (persistent ones would outlive the run)."""
        for loader in (self.train, self.val):  # the recalibration loader has no workers
            shutdown_workers(loader)
