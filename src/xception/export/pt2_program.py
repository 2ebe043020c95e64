"""``torch.export`` programs (``.pt2``): any batch size and, by default, any image size of at least
the model's minimum (``torch.export.Dim``), saved with ``torch.export.save`` and checked after
``torch.export.load``. Loading one needs only torch, not this package:

    program = torch.export.load("model.pt2"); logits = program.module()(images)
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, WeightsError, XceptionError
from ..files import atomic_write
from .graph import export_graph
from .onnx_graph import _failed
from .verify import FALLBACK, Check, check_sizes, compare


def _size_oblivious() -> contextlib.AbstractContextManager:
    """Symbolic sizes that may reach 1 without a guard: the last feature map of a small input is
    1x1, and without this ``torch.export`` would specialise on "not 1" and refuse the range."""
    try:
        import torch.fx.experimental._config as fx_config
    except ImportError:  # pragma: no cover - older torch
        return contextlib.nullcontext()
    if not hasattr(fx_config, "backed_size_oblivious"):  # pragma: no cover
        return contextlib.nullcontext()
    return fx_config.patch(backed_size_oblivious=True)


def export_program(model: nn.Module, image_size: int = 299,
                   dynamic_size: bool = True) -> torch.export.ExportedProgram:
    """``model`` (eval mode, BatchNorm folded) as an ``ExportedProgram``: dynamic batch, and
    dynamic height and width (>= the model's minimum input) unless ``dynamic_size=False``."""
    cfg = model.config
    if image_size < cfg.min_input_size:
        raise ConfigError(f"image_size={image_size} is below the model's minimum "
                          f"{cfg.min_input_size}")
    graph = export_graph(model, dynamic_size)
    example = torch.zeros(2, cfg.in_chans, image_size, image_size)
    dims: dict[int, torch.export.Dim] = {0: torch.export.Dim("batch", min=1)}
    if dynamic_size:
        dims[2] = torch.export.Dim("height", min=cfg.min_input_size)
        dims[3] = torch.export.Dim("width", min=cfg.min_input_size)
    try:
        with torch.no_grad(), _size_oblivious():
            return torch.export.export(graph, (example,), dynamic_shapes=(dims,))
    except XceptionError:
        raise
    except Exception as e:  # constraint violations, unsupported ops: say which option to use
        raise ConfigError(_failed("torch.export", e, dynamic_size)) from e


def export_pt2(model: nn.Module, path: str | Path, image_size: int = 299, verify: bool = True,
               atol: float = 1e-4, *, dynamic_size: bool = True) -> tuple[Path, Check | None]:
    """Write ``export_program(model, ...)`` with ``torch.export.save``, atomically. With
    ``verify`` the saved file is loaded back and compared with the PyTorch model at two batch
    sizes (and two image sizes) before it replaces ``path``."""
    reference = model.eval()
    program = export_program(model, image_size, dynamic_size)
    checks: list[Check] = []

    def write(tmp: str) -> None:
        # through a buffer: torch.export.save warns about a file name not ending in .pt2 (the
        # temporary file's)
        buf = io.BytesIO()
        torch.export.save(program, buf)
        Path(tmp).write_bytes(buf.getbuffer())
        if verify:
            try:
                checks.append(verify_pt2(reference, tmp, check_sizes(image_size, dynamic_size),
                                         atol=atol))
            except WeightsError as e:
                raise WeightsError(f"{e}; {FALLBACK}" if dynamic_size else str(e)) from e

    out = atomic_write(path, write)
    return out, (checks[0] if checks else None)


def verify_pt2(model: nn.Module, path: str | Path, sizes: tuple[int, ...],
               batches: tuple[int, ...] = (1, 3), atol: float = 1e-4) -> Check:
    """``compare`` for a ``.pt2`` file, loaded with ``torch.export.load``."""
    module = torch.export.load(io.BytesIO(Path(path).read_bytes())).module()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(x)).numpy()

    return compare(run, model, f"torch.export program {str(path)!r}", sizes, batches, atol)
