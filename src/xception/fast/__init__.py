"""The fast path: BatchNorm folding and fused CPU inference (``optimize_for_inference``), and
Triton kernels for the memory-bound parts of training on GPUs (``fuse_for_training``)."""

from .fold import fold_batchnorm, fold_conv_bn
from .optimize import optimize_for_inference, relative_error

__all__ = ["fold_batchnorm", "fold_conv_bn", "optimize_for_inference", "relative_error"]
