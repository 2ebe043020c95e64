"""Padding modes on every conv/pool: TF "same" (asymmetric on odd totals) and timm's symmetric."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from xception import InputError, create_model
from xception.models.layers import Conv2d, MaxPool2d, same_padding


@pytest.mark.parametrize("size", range(71, 80))
@pytest.mark.parametrize("kernel, stride", [(3, 2), (3, 1), (1, 2)])
def test_same_padding_is_tensorflows_rule(size, kernel, stride):
    """TF: output ceil(size / stride); the odd pixel of an odd total goes after the input."""
    before, after = same_padding(size, kernel, stride)
    assert (size + before + after - kernel) // stride + 1 == -(-size // stride)
    assert after - before in (0, 1)


@pytest.mark.parametrize("size", [10, 11])
def test_set_padding_switches_a_layer_in_place(size):
    torch.manual_seed(0)
    x = torch.randn(1, 4, size, size)
    for mode in ("tf_same", "symmetric"):
        conv = Conv2d(4, 4, 3, stride=2, padding="symmetric")
        fresh = Conv2d(4, 4, 3, stride=2, padding=mode)
        fresh.load_state_dict(conv.state_dict())
        conv.set_padding(mode)
        assert torch.equal(conv(x), fresh(x))
        pool = MaxPool2d(3, 2, "symmetric")
        pool.set_padding(mode)
        assert torch.equal(pool(x), MaxPool2d(3, 2, mode)(x))


def test_tf_same_pool_pads_after_on_even_inputs():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    tf = MaxPool2d(3, 2, "tf_same")(x)
    # TF: windows start at 0 and 2, the missing row/column is after the input
    assert torch.equal(tf, F.max_pool2d(F.pad(x, (0, 1, 0, 1), value=-float("inf")), 3, 2))
    assert not torch.equal(tf, MaxPool2d(3, 2, "symmetric")(x))


@pytest.mark.parametrize("padding", ["tf_same", "symmetric"])
def test_any_size_from_71(padding):
    """Odd and even maps at every stage; both rules give ceil(n / 2) after each stride 2."""
    model = create_model("xception", padding=padding, num_classes=0).eval()
    with torch.no_grad():
        for size in (71, 80):  # 71: odd maps only; 80: block13's pool sees an even map
            n = (size - 3) // 2 + 1 - 2  # the stem's two valid 3x3 convs
            for _ in range(4):
                n = -(-n // 2)
            assert model.forward_features(torch.zeros(1, 3, size, size)).shape == (1, 2048, n, n)
        with pytest.raises(InputError, match="minimum of 71x71"):
            model(torch.zeros(1, 3, 70, 70))


def test_set_numerics_changes_every_layer_and_the_config():
    model = create_model("xception")
    model.set_numerics(padding="symmetric", bn_eps=1e-5)
    assert model.config.padding == "symmetric" and model.config.stem_padding == "valid"
    modes = {m.pad_mode for n, m in model.named_modules()
             if isinstance(m, (Conv2d, MaxPool2d)) and not n.startswith("stem.")}
    assert modes == {"symmetric"}
    assert {m.eps for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {1e-5}
    assert model.stem.conv1.pad_mode == "valid"
