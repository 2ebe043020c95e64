"""The fast path: BatchNorm folding and fused CPU inference (``optimize_for_inference``), and
Triton kernels for the memory-bound parts of training and inference on GPUs (``fuse_model``)."""

from .fold import fold_batchnorm, fold_conv_bn
from .fuse import fuse_model, unfuse
from .optimize import optimize_for_inference, relative_error

__all__ = ["fold_batchnorm", "fold_conv_bn", "fuse_model", "optimize_for_inference",
           "relative_error", "unfuse"]
