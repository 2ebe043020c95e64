"""ONNX export with PyTorch's TorchScript-based exporter, checked against the model with onnxruntime.

The graph takes any batch size and, by default, any image size of at least the model's minimum:
TF-"same" padding is recorded as shape arithmetic (``graph.export_graph``), and height and width
are dynamic axes. ``dynamic_size=False`` bakes one image size in (the padding as constants): the
fallback for a model whose padding cannot be written that way. Only ``torch`` is needed to export;
``onnxruntime`` (``pip install onnxruntime``, in the ``onnx`` and ``test`` extras) to verify.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from ..errors import ConfigError, WeightsError, XceptionError
from ..files import atomic_write
from .graph import export_graph
from .verify import FALLBACK, Check, check_sizes, compare

INPUT, OUTPUT = "images", "logits"


def export_onnx(model: nn.Module, path: str | Path, image_size: int = 299, opset: int = 17,
                verify: bool = False, atol: float = 1e-4, *,
                dynamic_size: bool = True) -> tuple[Path, Check | None]:
    """Write ``model`` (eval mode, BatchNorm folded) as an ONNX graph, atomically.

    ``image_size`` is the size traced at (and checked at, with ``image_size + 1`` when the size is
    dynamic); ``dynamic_size=False`` fixes the graph to ``image_size`` inputs. With ``verify`` the
    graph is run with onnxruntime at two batch sizes (and two image sizes) before it replaces
    ``path``; returns the path and the comparison with PyTorch (None when not verified).
    """
    cfg = model.config
    if verify:
        _onnxruntime()
    if image_size < cfg.min_input_size:
        raise ConfigError(f"image_size={image_size} is below the model's minimum "
                          f"{cfg.min_input_size}")
    reference = model.eval()
    graph = export_graph(model, dynamic_size)
    example = torch.zeros(2, cfg.in_chans, image_size, image_size)
    axes = {0: "batch", 2: "height", 3: "width"} if dynamic_size else {0: "batch"}
    checks: list[Check] = []

    def write(tmp: str) -> None:
        with warnings.catch_warnings():
            # the input-size check is traced at the example's size: intended (ONNX has no raise)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", message="Constant folding")
            try:
                torch.onnx.export(graph, (example,), tmp, dynamo=False, opset_version=opset,
                                  input_names=[INPUT], output_names=[OUTPUT],
                                  dynamic_axes={INPUT: axes, OUTPUT: {0: "batch"}})
            except XceptionError:
                raise
            except Exception as e:  # the exporter's own errors: say which option to use
                raise ConfigError(_failed("ONNX", e, dynamic_size)) from e
        if verify:
            sizes = check_sizes(image_size, dynamic_size)
            try:
                checks.append(verify_onnx_shapes(reference, tmp, sizes, atol=atol))
            except WeightsError as e:
                raise WeightsError(f"{e}; {FALLBACK}" if dynamic_size else str(e)) from e

    out = atomic_write(path, write)
    return out, (checks[0] if checks else None)


def _failed(what: str, e: Exception, dynamic_size: bool) -> str:
    first = (str(e).strip().splitlines() or [""])[0][:300]
    hint = f"; {FALLBACK}" if dynamic_size else ""
    return f"the {what} exporter failed ({type(e).__name__}: {first}){hint}"


def _onnxruntime() -> ModuleType:
    try:
        import onnxruntime
    except ImportError:
        raise ConfigError("verifying an ONNX export needs onnxruntime: "
                          "pip install onnxruntime") from None
    return onnxruntime


def verify_onnx_shapes(model: nn.Module, path: str | Path, sizes: tuple[int, ...],
                       batches: tuple[int, ...] = (1, 3), atol: float = 1e-4) -> Check:
    """``compare`` for an ONNX file run by onnxruntime on CPU."""
    ort = _onnxruntime()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return compare(lambda x: session.run([OUTPUT], {INPUT: x})[0], model,
                   f"ONNX export {str(path)!r}", sizes, batches, atol)


def verify_onnx(model: nn.Module, path: str | Path, image_size: int = 299, batch: int = 2,
                atol: float = 1e-4, seed: int = 0) -> Check:
    """Max |onnxruntime - torch| on random ``batch`` x ``image_size`` inputs; raises
    WeightsError above ``atol`` (relative to the outputs' scale where it exceeds 1)."""
    ort = _onnxruntime()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return compare(lambda x: session.run([OUTPUT], {INPUT: x})[0], model,
                   f"ONNX export {str(path)!r}", (image_size,), (batch,), atol, seed)
