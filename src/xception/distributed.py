"""Several processes (torchrun) or one: who am I, which device, and summing numbers across ranks.

``torchrun`` sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT; ``setup`` joins the
process group from them (NCCL on CUDA, gloo on CPU). Without them everything here works for a
single process and every collective is a no-op, so the training code has one path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from .errors import ConfigError


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False       # we initialised the process group, so we tear it down

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0, setting: str = "train.device") -> torch.device:
    """``auto``: the local GPU if there is one, else the CPU. ``setting`` names the option in errors."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"{setting}={name!r} is not a device; use auto, cpu or cuda[:N]") \
            from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{setting}={name!r} but no CUDA GPU is available; use cpu or auto")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
    return device


def restart_advice() -> str | None:
    """A warning for a torchrun job that may restart (``--max-restarts``) while its agents share
    the rendezvous store with the workers (torchrun's default): a restarted round can then hang
    or fail to form, e.g. a requeued node waits forever for a master address
    (pytorch/pytorch#135712; it hung a restart test here once in three tries). Each round gets
    its own store with ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1`` set where torchrun starts."""
    env = os.environ
    if env.get("TORCHELASTIC_USE_AGENT_STORE") != "True" or \
            env.get("TORCH_DISABLE_SHARE_RDZV_TCP_STORE") == "1":
        return None
    if int(env.get("TORCHELASTIC_MAX_RESTARTS", "0") or 0) <= 0:
        return None
    return ("warning: torchrun may restart this job (--max-restarts) but shares its rendezvous "
            "store with the workers, and restarted rounds can then hang (pytorch/pytorch#135712); "
            "start torchrun with TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 in its environment")


def world_size() -> int:
    """The number of training processes: torchrun's ``WORLD_SIZE``, else 1."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        raise ConfigError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not a number") from None


def setup(device_name: str = "auto", backend: str = "auto") -> DistContext:
    """Join the torchrun process group if there is one (or use the one already joined)."""
    world = world_size()
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local = int(os.environ.get("LOCAL_RANK", rank))
        return DistContext(rank, world, local, resolve_device(device_name, local), False)
    if world <= 1:
        return DistContext(device=resolve_device(device_name))
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local)
    if device.type == "cuda":  # one GPU per process: the local rank's, whatever index was named
        device = torch.device("cuda", local % torch.cuda.device_count())
    if backend == "auto":
        backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, rank=rank, world_size=world)
    return DistContext(rank, world, local, device, True)


def teardown(ctx: DistContext) -> None:
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def _comm_device(ctx: DistContext) -> torch.device:
    # NCCL only moves CUDA tensors; gloo only CPU ones
    return ctx.device if dist.get_backend() == "nccl" else torch.device("cpu")


def all_sum(ctx: DistContext, values: list[float]) -> list[float]:
    """Element-wise sums over all ranks (float64)."""
    if not ctx.enabled:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=_comm_device(ctx))
    dist.all_reduce(t)
    return t.tolist()


def any_rank(ctx: DistContext, flags: list[bool]) -> list[bool]:
    """Element-wise OR over ranks: all ranks take the same decision (skip a step, stop)."""
    if not ctx.enabled:
        return list(flags)
    t = torch.tensor([float(f) for f in flags], device=_comm_device(ctx))
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def gather_rows(ctx: DistContext, x: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's rows (ranks may hold different counts), in rank order."""
    if not ctx.enabled:
        return x
    dev = _comm_device(ctx)
    x = x.to(dev)
    counts = [torch.zeros(1, dtype=torch.long, device=dev) for _ in range(ctx.world_size)]
    dist.all_gather(counts, torch.tensor([x.shape[0]], device=dev))
    most = int(max(c.item() for c in counts))
    padded = torch.zeros((most, *x.shape[1:]), dtype=x.dtype, device=dev)
    padded[:x.shape[0]] = x
    parts = [torch.empty_like(padded) for _ in range(ctx.world_size)]
    dist.all_gather(parts, padded)
    return torch.cat([p[:int(c.item())] for p, c in zip(parts, counts, strict=True)])


def gather_tensors(ctx: DistContext, x: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's copy of a same-shaped tensor (e.g. RNG states), as CPU tensors."""
    if not ctx.enabled:
        return [x.cpu()]
    dev = _comm_device(ctx)
    parts = [torch.empty_like(x, device=dev) for _ in range(ctx.world_size)]
    dist.all_gather(parts, x.to(dev))
    return [p.cpu() for p in parts]


def broadcast_buffers(ctx: DistContext, module: nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm statistics), as DDP does before a forward."""
    if not ctx.enabled:
        return
    for b in module.buffers():
        if b.device.type == "cpu" and dist.get_backend() == "nccl":
            continue
        dist.broadcast(b.data, src=0)


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()
