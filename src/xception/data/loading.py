"""Samplers, collation and the ``DataLoader``: what each process reads, in which order.

``TrainBatches`` follows ``DistributedSampler``'s contract (a permutation seeded by seed + epoch,
``set_epoch``, ``num_replicas``/``rank``) with two differences that make runs reproducible:
each *global* batch is cut into contiguous per-process, per-micro-batch blocks, so a run on W
processes with A accumulation steps computes what one process with W*A accumulation steps
computes; and ``set_epoch(epoch, start_step)`` resumes in the middle of an epoch.
``EvalBatches`` shards the validation set without padding, so no image is counted twice.

Loader workers outlive a stop request (SIGTERM/SIGINT) until the main process has saved its
checkpoint, and never outlive the main process: ``shutdown_workers`` ends them when a run is done,
and a loader nobody shut down releases its workers when it is collected or Python exits.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import signal
import weakref
from typing import Any, NamedTuple

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .images import BadSample


class Batch(NamedTuple):
    x: torch.Tensor | None           # None when every image of the batch was unreadable
    y: torch.Tensor | None           # class indices (N,) or multi-hot (N, C) float
    bad: list[tuple[str, str]]       # (path, reason) of the images that were skipped


class Collate:
    """Stack the readable samples; multi-label targets become multi-hot rows."""

    def __init__(self, num_classes: int, multi_label: bool = False) -> None:
        self.num_classes, self.multi_label = num_classes, multi_label

    def __call__(self, items: list) -> Batch:
        good = [it for it in items if not isinstance(it, BadSample)]
        bad = [(it.path, it.reason) for it in items if isinstance(it, BadSample)]
        if not good:
            return Batch(None, None, bad)
        x = torch.stack([torch.as_tensor(img).as_subclass(torch.Tensor) for img, _ in good])
        if self.multi_label:
            y = torch.zeros(len(good), self.num_classes)
            for row, (_, labels) in enumerate(good):
                y[row, list(labels)] = 1.0
        else:
            y = torch.tensor([int(t) for _, t in good], dtype=torch.long)
        return Batch(x, y, bad)


def split_evenly(total: int, parts: int) -> list[int]:
    base, extra = divmod(total, parts)
    return [base + (i < extra) for i in range(parts)]


class TrainBatches(Sampler[list]):
    """This process's micro-batches of ``(epoch, index)`` keys, global step by global step.

    Step t covers positions [t*B, t*B + size_t) of the epoch's permutation (B = global batch);
    process ``rank`` takes blocks ``rank*A .. rank*A + A-1`` of its W*A near-equal blocks. The last
    partial batch is kept when every block gets >= 2 images (BatchNorm needs two), else dropped.
    """

    def __init__(self, n: int, batch: int, world: int = 1, rank: int = 0, accum: int = 1,
                 seed: int = 0, shuffle: bool = True) -> None:
        self.n, self.batch, self.world, self.rank, self.accum = n, batch, world, rank, accum
        self.seed, self.shuffle = seed, shuffle
        self.epoch, self.start = 0, 0
        self.parts = world * accum
        if batch % self.parts:
            raise ValueError(f"global batch {batch} is not divisible by {world} processes x "
                             f"{accum} accumulation steps")
        rest = n % batch
        self.steps_per_epoch = n // batch + (rest >= 2 * self.parts)
        self.epoch_samples = n - rest + (rest if rest >= 2 * self.parts else 0)

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.epoch, self.start = epoch, start_step

    def step_size(self, t: int) -> int:
        """Images in global step ``t`` (all processes together)."""
        return self.batch if t < self.n // self.batch else self.n % self.batch

    def order(self) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.n)
        return torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch))

    def __iter__(self):
        perm = self.order().tolist()
        for t in range(self.start, self.steps_per_epoch):
            sizes = split_evenly(self.step_size(t), self.parts)
            lo = t * self.batch
            for a in range(self.accum):
                j = self.rank * self.accum + a
                begin = lo + sum(sizes[:j])
                yield [(self.epoch, i) for i in perm[begin:begin + sizes[j]]]

    def __len__(self) -> int:
        return max(0, self.steps_per_epoch - self.start) * self.accum


class EvalBatches(Sampler[list]):
    """Indices ``rank, rank + W, ...`` in batches: every image on exactly one process."""

    def __init__(self, n: int, batch: int, world: int = 1, rank: int = 0) -> None:
        self.indices = list(range(rank, n, world))
        self.batch = batch

    def __iter__(self):
        for i in range(0, len(self.indices), self.batch):
            yield self.indices[i:i + self.batch]

    def __len__(self) -> int:
        return -(-len(self.indices) // self.batch)


class _WorkerSignals:
    """``worker_init_fn``: stop requests are the main process's, which stops at a step boundary.

    A terminal's Ctrl-C (SIGINT) and a scheduler's SIGTERM reach every process of the job, so a
    worker ignores SIGINT and defers SIGTERM: it goes on serving batches while the main process
    finishes its step and writes the checkpoint. Once the main process has *released* its workers
    (``shutdown_workers``, or the loader collected or Python exiting), SIGTERM ends a worker
    at once with exit status 0. Python's exit handler terminates daemon workers with SIGTERM and
    then waits for them, so a worker that ignored SIGTERM for good would hang the exit.
    """

    def __init__(self) -> None:
        self.released = multiprocessing.Event()

    def __call__(self, _: int) -> None:
        released = self.released

        def on_sigterm(signum: int, frame: Any) -> None:
            if released.is_set():
                os._exit(0)  # status 0: the main process's worker watch does not call it a crash

        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, on_sigterm)


_LIVE: weakref.WeakSet[_WorkerSignals] = weakref.WeakSet()


def _release_all() -> None:
    """At exit, before multiprocessing's exit handler terminates the workers and waits for them
    (atexit runs the last registered first; multiprocessing registers when it is imported)."""
    for signals in list(_LIVE):
        signals.released.set()


def shutdown_workers(loader: DataLoader) -> None:
    """End ``loader``'s worker processes now: they finish cleanly (one that does not within a few
    seconds is terminated). Idempotent; a later ``iter(loader)`` starts new workers."""
    signals = loader.worker_init_fn if isinstance(loader.worker_init_fn, _WorkerSignals) else None
    it, loader._iterator = getattr(loader, "_iterator", None), None
    shutdown = getattr(it, "_shutdown_workers", None)  # only multi-process iterators have one
    if shutdown is None:
        return
    if signals is not None:
        signals.released.set()
    try:
        shutdown()
    finally:
        if signals is not None:
            signals.released.clear()  # the workers are gone; new ones defer SIGTERM again


def make_loader(ds: Dataset, batch_size: int, shuffle: bool = False, num_workers: int = 0,
                generator: torch.Generator | None = None, *, batch_sampler: Sampler | None = None,
                prefetch_factor: int = 2, pin_memory: bool | None = None) -> DataLoader:
    """A loader over ``ds`` with our collation; workers are persistent and memory is pinned on
    CUDA. Without ``batch_sampler``: the whole set in order (or shuffled, seeded by
    ``generator``), one process."""
    if batch_sampler is None:
        if shuffle:
            seed = int(generator.initial_seed()) if generator is not None else 0
            batch_sampler = TrainBatches(len(ds), batch_size, seed=seed)
        else:
            batch_sampler = EvalBatches(len(ds), batch_size)
    collate = Collate(getattr(ds, "num_classes", 0), getattr(ds, "multi_label", False))
    signals = _WorkerSignals() if num_workers > 0 else None
    extra = {"prefetch_factor": prefetch_factor, "persistent_workers": True,
             "worker_init_fn": signals} if signals is not None else {}
    loader = DataLoader(ds, batch_sampler=batch_sampler, num_workers=num_workers,
                        collate_fn=collate,
                        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
                        # its own generator: creating an iterator must not draw from the global RNG
                        generator=torch.Generator().manual_seed(0), **extra)
    if signals is not None:
        if not _LIVE:  # (again) after multiprocessing's: at exit, ours runs first
            atexit.unregister(_release_all)
            atexit.register(_release_all)
        _LIVE.add(signals)
        # a collected loader's iterator shuts its workers down: release them first
        weakref.finalize(loader, signals.released.set)
    return loader
