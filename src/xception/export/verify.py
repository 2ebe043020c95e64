"""An exported graph against the PyTorch model it came from, on random inputs of several shapes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..errors import WeightsError

BATCHES = (1, 3)  # the examples are traced at batch 2: neither may be baked into the graph


@dataclass(frozen=True)
class Check:
    """Exported graph vs PyTorch on random inputs: the max abs difference, the outputs' scale, and
    the (batch, size) shapes compared."""

    diff: float
    scale: float
    shapes: tuple[tuple[int, int], ...] = ()

    def __str__(self) -> str:
        text = f"max abs difference {self.diff:.1e} on outputs up to {self.scale:.3g}"
        if self.shapes:
            batches = sorted({b for b, _ in self.shapes})
            sizes = sorted({s for _, s in self.shapes})
            text += (f" (batch {', '.join(map(str, batches))} x "
                     f"{', '.join(f'{s}x{s}' for s in sizes)} px)")
        return text


FALLBACK = "export a graph for one image size with --image-size N (dynamic_size=False)"


def check_sizes(image_size: int, dynamic: bool) -> tuple[int, ...]:
    """The image sizes a check runs at: the export's size and, for a graph that takes any size,
    one more of the other parity (TF padding differs between odd and even sizes)."""
    return (image_size, image_size + 1) if dynamic else (image_size,)


@torch.no_grad()
def compare(run: Callable[[np.ndarray], np.ndarray], model: nn.Module, what: str,
            sizes: Sequence[int], batches: Sequence[int] = BATCHES, atol: float = 1e-4,
            seed: int = 0) -> Check:
    """Max |run(x) - model(x)| over random inputs of every (batch, size); ``WeightsError`` above
    ``atol``. The tolerance scales with the outputs when they exceed 1 (untrained nets can have
    logits in the thousands, where float32 rounding alone exceeds 1e-4)."""
    gen = torch.Generator().manual_seed(seed)
    model = model.eval()
    diff, scale, shapes = 0.0, 0.0, []
    for size in sizes:
        for batch in batches:
            x = torch.rand(batch, model.config.in_chans, size, size, generator=gen) * 2 - 1
            expected = model(x).numpy()
            try:
                got = np.asarray(run(x.numpy()))
            except Exception as e:  # a runtime's own error: a graph made for another shape
                first = (str(e).strip().splitlines() or [""])[0][:300]
                raise WeightsError(f"{what} fails on inputs shaped {tuple(x.shape)} "
                                   f"({type(e).__name__}: {first})") from e
            if got.shape != expected.shape:
                raise WeightsError(f"{what} gives outputs shaped {got.shape} for inputs "
                                   f"{tuple(x.shape)}; PyTorch gives {expected.shape}")
            d, s = float(np.abs(got - expected).max()), float(np.abs(expected).max())
            tol = atol * max(1.0, s)
            if not d <= tol:
                raise WeightsError(f"{what} differs from the PyTorch model by {d:.2e} at batch "
                                   f"{batch}, {size}x{size} px (tolerance {tol:.1e} for outputs "
                                   f"up to {s:.3g})")
            diff, scale = max(diff, d), max(scale, s)
            shapes.append((batch, size))
    return Check(diff, scale, tuple(shapes))
