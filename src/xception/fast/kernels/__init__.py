"""Triton kernels (NHWC) with autograd wrappers and PyTorch fallbacks: ``ops`` is the API,
``batchnorm``/``depthwise``/``maxpool`` hold the kernels, ``launch`` decides where they run,
``check`` compares them with PyTorch (used by the tests and benchmarks/gpu_check.py)."""
