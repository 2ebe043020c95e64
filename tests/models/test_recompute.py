"""Activation checkpointing: same gradients and BN statistics, less saved activation memory."""

import copy

import pytest
import torch

import xception
from xception.bench import BenchSettings, saved_activation_bytes

pytestmark = pytest.mark.usefixtures("one_thread")


def test_checkpointing_changes_memory_not_results(tiny):
    model = xception.create_model("xception_small", **tiny).train()
    ckpt = copy.deepcopy(model)
    ckpt.set_grad_checkpointing(True)
    x = torch.randn(4, 3, 32, 32)
    g = torch.randn(4, 10)
    (model(x) * g).sum().backward()
    (ckpt(x) * g).sum().backward()
    for (name, a), b in zip(model.named_parameters(), ckpt.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-6, msg=name)
    # the recomputation in backward must not update running statistics a second time
    for (name, a), b in zip(model.named_buffers(), ckpt.buffers(), strict=True):
        assert torch.equal(a, b), name
    s = BenchSettings(device="cpu")
    plain = saved_activation_bytes(model, x, s, torch.device("cpu"))
    saved = saved_activation_bytes(ckpt, x, s, torch.device("cpu"))
    assert saved < plain / 2, (saved, plain)


def test_checkpointing_is_off_in_eval_and_by_default(tiny):
    model = xception.create_model("xception_small", **tiny)
    assert model.grad_checkpointing is False
    model.set_grad_checkpointing()
    with torch.no_grad():
        y = model.eval()(torch.randn(1, 3, 32, 32))
    assert y.shape == (1, 10)
