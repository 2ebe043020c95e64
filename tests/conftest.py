"""Shared fixtures: tiny model settings so tests run in seconds on 2 CPU cores."""

from __future__ import annotations

import os

import pytest
import torch

# Without a GPU the Triton kernels are checked under Triton's CPU interpreter. Triton reads the
# flag when it is first imported (torchvision imports it), so it is set here, before any test
# module is collected. Models run PyTorch ops unless they were fused for the kernels.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# The block structure of xception_small (14 modules, 3-conv middle blocks) at a fraction of its
# width and with 2 middle repeats: every code path, a few thousand parameters.
TINY = dict(stem_channels=(8, 8), entry_channels=(16, 16, 32), middle_channels=32,
            middle_repeats=2, exit_channels=(32, 64), final_channels=(64, 64))


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


@pytest.fixture
def tiny() -> dict:
    return dict(TINY)


@pytest.fixture
def one_thread():
    """Tiny models on a shared 2-core machine: one thread avoids waiting on a busy second core."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
