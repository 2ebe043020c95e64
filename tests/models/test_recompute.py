"""Activation checkpointing: same gradients and BN statistics, less saved activation memory."""

import copy

import pytest
import torch

import xception
import xception.models.xception as xception_module
from xception.bench import BenchSettings, saved_activation_bytes
from xception.models import recompute

pytestmark = pytest.mark.usefixtures("one_thread")


def test_checkpointing_changes_memory_not_results(tiny):
    model = xception.create_model("xception_small", **tiny).train()
    recomputing = copy.deepcopy(model)
    recomputing.set_grad_checkpointing(True)
    x = torch.randn(4, 3, 32, 32)
    upstream = torch.randn(4, 10)
    (model(x) * upstream).sum().backward()
    (recomputing(x) * upstream).sum().backward()
    for (name, plain), recomputed in zip(model.named_parameters(), recomputing.parameters(),
                                         strict=True):
        torch.testing.assert_close(plain.grad, recomputed.grad, rtol=1e-5, atol=1e-6, msg=name)
    # the recomputation in backward must not update running statistics a second time
    for (name, plain), recomputed in zip(model.named_buffers(), recomputing.buffers(), strict=True):
        assert torch.equal(plain, recomputed), name
    settings = BenchSettings(device="cpu")
    plain_bytes = saved_activation_bytes(model, x, settings, torch.device("cpu"))
    saved_bytes = saved_activation_bytes(recomputing, x, settings, torch.device("cpu"))
    assert saved_bytes < plain_bytes / 2, (saved_bytes, plain_bytes)


def test_checkpointing_is_off_in_eval_and_by_default(tiny):
    model = xception.create_model("xception_small", **tiny)
    assert model.grad_checkpointing is False
    model.set_grad_checkpointing()
    with torch.no_grad():
        logits = model.eval()(torch.randn(1, 3, 32, 32))
    assert logits.shape == (1, 10)


@pytest.mark.parametrize("entry", ["forward", "forward_stages"])
def test_both_entries_checkpoint_every_block_and_compute_the_same(tiny, monkeypatch, entry):
    """``forward`` (through ``forward_features``) and ``forward_stages`` share one checkpointing
    path: every block goes through ``checkpointed`` exactly once per forward, and the outputs,
    the gradients and the BatchNorm statistics are bit-identical to the plain model's."""
    ran: list[torch.nn.Module] = []

    def counted(block: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        ran.append(block)
        return recompute.checkpointed(block, x)

    monkeypatch.setattr(xception_module, "checkpointed", counted)
    model = xception.create_model("xception_small", **tiny).train()
    recomputing = copy.deepcopy(model)
    recomputing.set_grad_checkpointing(True)
    blocks = [*recomputing.entry_flow, *recomputing.middle_flow, *recomputing.exit_flow]
    x = torch.randn(4, 3, 32, 32)

    def outputs(net: torch.nn.Module) -> list[torch.Tensor]:
        return [net(x)] if entry == "forward" else net.forward_stages(x)

    plain_outputs = outputs(model)
    assert ran == []
    recomputed_outputs = outputs(recomputing)
    assert ran == blocks
    assert len(recomputed_outputs) == len(plain_outputs)
    for plain, recomputed in zip(plain_outputs, recomputed_outputs, strict=True):
        assert torch.equal(plain, recomputed)
    upstream = [torch.randn_like(out) for out in plain_outputs]
    for net_outputs in (plain_outputs, recomputed_outputs):
        sum((out * weight).sum() for out, weight in zip(net_outputs, upstream, strict=True)).backward()
    for (name, plain), recomputed in zip(model.named_parameters(), recomputing.parameters(),
                                         strict=True):
        if plain.grad is None:  # the head, which forward_stages does not run
            assert name.startswith("head.") and entry == "forward_stages" and recomputed.grad is None
        else:
            assert torch.equal(plain.grad, recomputed.grad), name
    for (name, plain), recomputed in zip(model.named_buffers(), recomputing.buffers(), strict=True):
        assert torch.equal(plain, recomputed), name
    ran.clear()
    with torch.no_grad():
        outputs(recomputing)
    assert ran == []  # no gradients taken: nothing to recompute
