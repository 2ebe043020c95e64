"""Where Triton kernels run: compiled on CUDA tensors, Triton's interpreter on CPU tensors.

Triton decides at import time whether ``@triton.jit`` compiles or interprets (the
``TRITON_INTERPRET=1`` environment variable, read when ``triton`` is first imported, and
``torchvision`` imports it). So the interpreter is only available in a process that set the
variable before anything imported triton; the test suite's ``conftest.py`` does that on machines
without a GPU. Nothing in this package imports triton until a kernel is launched.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import importlib.util
import os
from collections.abc import Callable, Iterator
from typing import Any

import torch

BACKENDS = ("auto", "torch")
# programs a kernel grid aims for: enough to fill every SM of a large GPU several times over
TARGET_PROGRAMS = 1024
_backend = "auto"


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Run the fused ops as plain "torch" ops, or "auto": Triton kernels on CUDA tensors, and on
    CPU tensors under the interpreter."""
    global _backend
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    previous, _backend = _backend, name
    try:
        yield
    finally:
        _backend = previous


def triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def interpreter_enabled() -> bool:
    """True when triton runs kernels in its CPU interpreter in this process."""
    if not triton_installed():
        return False
    import triton

    knobs = getattr(triton, "knobs", None)
    if knobs is not None:  # triton >= 3.4
        return bool(knobs.runtime.interpret)
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


# The one switch for the Triton kernels' default on CUDA (``optimize_for_inference(kernels=
# "auto")``, hence eval/predict/benchmark): off until a GPU correctness run of the kernels
# (benchmarks/gpu_check.sh, sections 1-2) is recorded in benchmarks/RESULTS.md. The environment
# variable XCEPTION_CUDA_KERNELS=1 turns it on for one process (e.g. that GPU run itself).
KERNELS_VERIFIED_ON_GPU = False


def cuda_kernels_by_default() -> bool:
    """Whether ``kernels="auto"`` uses the Triton kernels for a model on a GPU."""
    return KERNELS_VERIFIED_ON_GPU or os.environ.get("XCEPTION_CUDA_KERNELS", "") == "1"


def kernels_run_on(x: torch.Tensor) -> bool:
    """Whether the fused ops run Triton kernels on ``x``: a CUDA tensor, or a CPU tensor under
    the interpreter (unless ``use_backend("torch")`` says otherwise)."""
    if _backend == "torch" or not triton_installed():
        return False
    if x.is_cuda:
        return True
    return x.device.type == "cpu" and interpreter_enabled()


# kernel name -> launches in this process: tests assert the Triton path really ran (a silent
# fallback to PyTorch's ops launches nothing)
LAUNCHES: collections.Counter[str] = collections.Counter()
# open ``record_grids`` logs; empty outside one, so a long run keeps nothing
_GRID_LOGS: list[list[tuple[str, tuple[int, ...]]]] = []


@contextlib.contextmanager
def record_grids() -> Iterator[list[tuple[str, tuple[int, ...]]]]:
    """Collect (kernel name, grid) of every launch inside the block: tests assert that a case
    ran >= 2 programs on every grid axis, so the reductions across programs were exercised."""
    log: list[tuple[str, tuple[int, ...]]] = []
    _GRID_LOGS.append(log)
    try:
        yield log
    finally:
        _GRID_LOGS.remove(log)


@functools.cache
def _jit(fn: Callable) -> Any:
    import triton

    return triton.jit(fn)


def launch(fn: Callable, grid: tuple[int, ...], *args: Any, num_warps: int = 4, **meta: Any) -> None:
    """Launch the plain Python kernel ``fn`` (jitted once) on ``grid``.

    CPU tensors need the interpreter; say so plainly instead of failing inside triton's driver.
    """
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    if tensors and not tensors[0].is_cuda and not interpreter_enabled():
        raise RuntimeError("Triton kernels on CPU tensors need Triton's interpreter: set "
                           "TRITON_INTERPRET=1 in the environment before triton is imported "
                           "(torchvision imports it)")
    _jit(fn)[grid](*args, num_warps=num_warps, **meta)
    LAUNCHES[fn.__name__] += 1
    for log in _GRID_LOGS:
        log.append((fn.__name__, tuple(grid)))


def rows_block(gpu_rows: int) -> int:
    """Rows (positions) per program. The interpreter runs programs one after another in Python,
    so there it takes 8x larger blocks: same code paths, a fraction of the programs."""
    return gpu_rows * 8 if interpreter_enabled() else gpu_rows


def next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def channel_block(c: int, cap: int = 64) -> int:
    """Channels per program: contiguous in NHWC, so 64 bf16 values are one 128-byte line."""
    return min(cap, max(16, next_pow2(c)))


def cdiv(a: int, b: int) -> int:
    return -(-a // b)
