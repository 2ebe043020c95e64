"""ONNX export, checked against the PyTorch model with onnxruntime when it is installed.

The graph takes a fixed image size (TF-"same" padding is worked out for that size when tracing) and
any batch size. PyTorch's TorchScript-based exporter is used, so only ``torch`` is needed to export;
``onnxruntime`` (``pip install onnxruntime``) is needed to verify.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .errors import ConfigError, WeightsError
from .fast import optimize_for_inference
from .files import atomic_write

INPUT, OUTPUT = "images", "logits"


@dataclass(frozen=True)
class Check:
    """onnxruntime vs PyTorch on random inputs: the max abs difference and the outputs' scale."""

    diff: float
    scale: float

    def __str__(self) -> str:
        return f"max abs difference {self.diff:.1e} on outputs up to {self.scale:.3g}"


def export_onnx(model: nn.Module, path: str | Path, image_size: int = 299, opset: int = 17,
                verify: bool = False, atol: float = 1e-4) -> tuple[Path, Check | None]:
    """Write ``model`` (eval mode, BatchNorm folded) as an ONNX graph for ``image_size`` inputs,
    atomically.

    With ``verify`` the graph is run with onnxruntime before it replaces ``path``; returns the
    path and the comparison with PyTorch (None when not verified).
    """
    cfg = model.config
    if verify:
        _onnxruntime()
    if image_size < cfg.min_input_size:
        raise ConfigError(f"image_size={image_size} is below the model's minimum "
                          f"{cfg.min_input_size}")
    reference = model.eval()
    # BatchNorm folded into the convs: a smaller, faster graph (checked against `reference`)
    graph = optimize_for_inference(model, channels_last=False, kernels=False)
    example = torch.zeros(1, cfg.in_chans, image_size, image_size)

    def write(tmp: str) -> None:
        with warnings.catch_warnings():
            # tracing turns the padding arithmetic into constants: intended, the size is fixed
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", message="Constant folding")
            torch.onnx.export(graph, (example,), tmp, dynamo=False, opset_version=opset,
                              input_names=[INPUT], output_names=[OUTPUT],
                              dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}})
        if verify:
            checks.append(verify_onnx(reference, tmp, image_size, atol=atol))

    checks: list[Check] = []
    out = atomic_write(path, write)
    return out, (checks[0] if checks else None)


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise ConfigError("verifying an ONNX export needs onnxruntime: "
                          "pip install onnxruntime") from None
    return onnxruntime


@torch.no_grad()
def verify_onnx(model: nn.Module, path: str | Path, image_size: int = 299, batch: int = 2,
                atol: float = 1e-4, seed: int = 0) -> Check:
    """Max |onnxruntime - torch| on random inputs; raises WeightsError above ``atol``.

    The tolerance scales with the outputs when they exceed 1 (untrained nets can have logits in
    the thousands, where float32 rounding alone exceeds 1e-4).
    """
    ort = _onnxruntime()
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, model.config.in_chans, image_size, image_size, generator=gen) * 2 - 1
    expected = model.eval()(x).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run([OUTPUT], {INPUT: x.numpy()})[0]
    diff = float(abs(got - expected).max())
    scale = max(1.0, float(abs(expected).max()))
    if not diff <= atol * scale:
        raise WeightsError(f"ONNX export {str(path)!r} differs from the PyTorch model by {diff:.2e} "
                           f"(tolerance {atol * scale:.1e} for outputs up to {scale:.3g})")
    return Check(diff, float(abs(expected).max()))
