"""Activation checkpointing that leaves BatchNorm statistics as an uncheckpointed step would.

``torch.utils.checkpoint`` runs a block's forward a second time during backward; a training-mode
BatchNorm would update its running statistics again there (twice the momentum per step). The
recomputation here restores every buffer of the block afterwards, so the only cost is time.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


@contextmanager
def buffers_restored(module: nn.Module) -> Iterator[None]:
    """Undo any in-place change to ``module``'s buffers (BN running stats) made inside the block."""
    saved = [(b, b.detach().clone()) for b in module.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buf, value in saved:
                buf.copy_(value)


def checkpointed(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)`` keeping only ``x`` for backward; activations inside are recomputed."""
    return checkpoint(module, x, use_reentrant=False,
                      context_fn=lambda: (nullcontext(), buffers_restored(module)))
