"""``optimize_for_inference``: the same function as the eval-mode model, computed faster.

What it does, each step measured to help on CPU (see benchmarks/RESULTS.md):
1. folds every BatchNorm into the conv before it (Xception's BNs follow the pointwise 1x1 of each
   separable conv, the stem convs and the shortcut convs; the max-pool comes after the BN, so
   folding before it is exact);
2. stores weights and activations channels_last (oneDNN's native layout: no reorders);
3. on a GPU, the fused Triton kernels (``fuse_model``): ReLU applied while the depthwise conv
   loads its input, max-pool + residual add in one pass;
4. optionally ``torch.compile`` with Inductor's freezing: weights become constants, oneDNN
   prepacks them and fuses each conv with the ReLU or residual add next to it.
Before returning, the result is checked against the eval-mode model on a random input.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from .fold import fold_batchnorm
from .fuse import fuse_model
from .kernels.launch import cuda_kernels_by_default, triton_installed

# the largest max |optimized - reference| / max |reference| accepted, by dtype (bfloat16: 8 bits
# of mantissa through 36 layers); the kernel checks (kernels/check.py) hold the fused ops to it in
# fp32, and in bf16 to a bound from PyTorch's own bf16 error that this value only caps
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 3e-2}


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """Max absolute difference over the reference's largest magnitude (a norm-wise relative error:
    per-element ratios are meaningless for logits near zero)."""
    scale = ref.detach().abs().max().clamp_min(torch.finfo(torch.float32).tiny)
    return float((out.detach().float() - ref.detach().float()).abs().max() / scale)


def dtype_of(model: nn.Module) -> torch.dtype:
    return next((p.dtype for p in model.parameters()), torch.float32)


def _input_spec(model: nn.Module) -> tuple[int, int]:
    cfg = getattr(model, "config", None)
    return getattr(cfg, "in_chans", 3), max(getattr(cfg, "min_input_size", 75), 75)


class CompiledForInference(nn.Module):
    """A folded model run through ``torch.compile`` with Inductor's freezing, under no_grad.

    Attributes other than ``forward`` (``config``, ``forward_features``, ``num_classes``, ...) come
    from the folded model. If compilation fails (no C++ compiler, an unsupported platform) the
    model warns once and runs eagerly from then on. Freezing bakes the weights in at compile
    time: build a new one after changing weights.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.compile_failed = False
        # not a registered submodule: it wraps self.model, whose parameters are already registered
        self.__dict__["_compiled"] = torch.compile(model, dynamic=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        compiled = self.__dict__["_compiled"]
        with torch.no_grad():
            if compiled is None:
                return self.model(x)
            import torch._inductor.config as inductor_config

            try:
                with inductor_config.patch(freezing=True):
                    return compiled(x)
            except Exception as err:  # noqa: BLE001 - any compiler failure: run eagerly instead
                out = self.model(x)  # a genuine input error raises here, as the model would
                warnings.warn(f"torch.compile failed ({type(err).__name__}: {err}); running the "
                              "folded model eagerly", RuntimeWarning, stacklevel=2)
                self.__dict__["_compiled"] = None
                self.compile_failed = True
                return out

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["model"], name)


def _cast_io(model: nn.Module, dtype: torch.dtype) -> None:
    """Hooks so a reduced-precision model takes and returns float32 like the original."""
    model.register_forward_pre_hook(lambda m, args: tuple(
        a.to(dtype) if torch.is_tensor(a) and a.is_floating_point() else a for a in args))
    model.register_forward_hook(lambda m, args, out: out.float())


def optimize_for_inference(model: nn.Module, *, channels_last: bool = True, compile: bool = False,
                           kernels: bool | str = "auto", dtype: torch.dtype | None = None,
                           verify: bool = True) -> nn.Module:
    """A copy of ``model`` for inference only, equal to ``model.eval()`` within 1e-4 relative.

    ``model`` itself is not changed. ``channels_last`` suits oneDNN (CPU) and cuDNN (GPU);
    pass False for ONNX export. ``compile=True`` adds ``torch.compile`` with freezing: the
    fastest on CPU, but each new input shape costs a compilation, which is slow, so use it
    for long runs (evaluation, serving), not for a handful of images. ``kernels``: use the
    Triton kernels (``"auto"``: on a GPU with triton installed, and only where
    ``cuda_kernels_by_default()`` - off until a GPU correctness run is recorded). Whenever the
    kernels are used they are checked against the model first; any failure (compiling,
    launching, accuracy) warns and falls back to PyTorch's ops.
    ``dtype=torch.bfloat16`` stores weights and activations in bfloat16 (inputs and outputs
    stay float32): on CPUs with AMX (Sapphire Rapids and later) much faster, at a bfloat16-sized
    relative error instead of 1e-4 - an opt-in, never the default (the figures as measured:
    benchmarks/RESULTS.md, "Figures moved out of code comments").
    ``verify`` compares the result with the eval-mode model on one random 75 px batch and, if
    they differ by more than the tolerance (1e-4; 3e-2 in bfloat16), warns and returns the
    plain eval-mode copy instead.
    """
    was_training = model.training
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    model_dtype = dtype_of(model)
    tol = TOLERANCE[torch.bfloat16 if dtype == torch.bfloat16 else torch.float32]

    def build(fused: bool) -> nn.Module:
        fast = copy.deepcopy(model).eval()
        fold_batchnorm(fast)
        fast.requires_grad_(False)
        if fused:
            fuse_model(fast, channels_last=channels_last)
        if channels_last:
            fast = fast.to(memory_format=torch.channels_last)
        if dtype is not None and dtype != model_dtype:
            fast = fast.to(dtype)
            _cast_io(fast, dtype)
        return fast

    def check(fast: nn.Module) -> float:
        chans, size = _input_spec(model)
        gen = torch.Generator(device="cpu").manual_seed(0)
        x = torch.randn(2, chans, size, size, generator=gen).to(device=device, dtype=model_dtype)
        model.eval()
        try:
            with torch.no_grad():
                return relative_error(fast(x), model(x))
        finally:
            model.train(was_training)

    wanted = kernels is True or (kernels == "auto" and device.type == "cuda"
                                 and triton_installed() and cuda_kernels_by_default())
    fast = None
    if wanted:
        # the kernels are always self-checked: a compile, launch or accuracy failure falls back
        # to PyTorch's ops with one warning instead of failing eval/predict/benchmark
        try:
            fast = build(fused=True)
            err = check(fast)
            if not err <= tol:
                raise RuntimeError(f"they differ from the model by {err:.2e} (relative), more "
                                   f"than {tol:g}")
        except Exception as exc:  # noqa: BLE001 - any kernel failure: use the PyTorch ops
            warnings.warn(f"optimize_for_inference: the Triton kernels failed ({type(exc).__name__}: "
                          f"{exc}); using PyTorch's ops", RuntimeWarning, stacklevel=2)
            fast = None
    if fast is None:
        fast = build(fused=False)
        if verify:
            err = check(fast)
            if not err <= tol:
                warnings.warn(f"optimize_for_inference: the optimized model differs from the "
                              f"original by {err:.2e} (relative), more than {tol:g}; using the "
                              "unoptimized eval-mode model", RuntimeWarning, stacklevel=2)
                return copy.deepcopy(model).eval().requires_grad_(False)
    return CompiledForInference(fast) if compile else fast
