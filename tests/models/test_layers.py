import pytest
import torch
import torch.nn.functional as F

from xception.errors import ConfigError, InputError
from xception.models.layers import ClassifierHead, Conv2d, MaxPool2d, SpectrumConv, check_images, same_padding


@pytest.mark.parametrize(("size", "kernel", "stride", "expected"), [
    (74, 3, 2, (0, 1)),   # block3's pool at 299 px: TF pads only after
    (75, 3, 2, (1, 1)),
    (147, 3, 2, (1, 1)),
    (10, 1, 2, (0, 0)),   # 1x1 convs never pad
    (11, 1, 2, (0, 0)),
    (8, 3, 1, (1, 1)),
    (8, 3, 2, (0, 1)),
    (9, 5, 2, (2, 2)),
])
def test_same_padding_follows_tensorflow(size, kernel, stride, expected):
    assert same_padding(size, kernel, stride) == expected


def _padded_pool(x, kernel, stride):
    """TF's "same" max-pool written out: the input padded by -inf, then a plain pool."""
    top, bottom = same_padding(x.shape[-2], kernel, stride)
    left, right = same_padding(x.shape[-1], kernel, stride)
    return F.max_pool2d(F.pad(x, (left, right, top, bottom), value=float("-inf")), kernel, stride)


@pytest.mark.parametrize("kernel,stride", [(3, 2), (3, 1), (2, 2), (5, 2), (3, 3)])
def test_tf_same_maxpool_equals_the_padded_pool_forward_and_backward(kernel, stride):
    pool = MaxPool2d(kernel, stride, "tf_same")
    for h in range(kernel, 24):
        x = torch.randn(2, 3, h, h + 1, requires_grad=True)
        ref = torch.randn(2, 3, h, h + 1, requires_grad=True)
        with torch.no_grad():
            ref.copy_(x)
        out, want = pool(x), _padded_pool(ref, kernel, stride)
        assert torch.equal(out, want), (h, kernel, stride)
        g = torch.randn_like(out)
        out.backward(g)
        want.backward(g)
        assert torch.equal(x.grad, ref.grad), (h, kernel, stride)


def test_tf_same_maxpool_makes_no_padded_copy(monkeypatch):
    """Xception's pools (3x3/2) at even and odd sizes take the ceil-mode path, not pad_same."""
    import xception.models.layers as layers

    def refuse(*args, **kwargs):
        raise AssertionError("padded a copy of the input")

    monkeypatch.setattr(layers, "pad_same", refuse)
    for size in (8, 9, 16, 17, 32, 74, 147):
        out = MaxPool2d(3, 2, "tf_same")(torch.randn(1, 2, size, size))
        assert out.shape[-1] == -(-size // 2)


@pytest.mark.parametrize("size", [7, 8, 15, 16])
def test_tf_same_maxpool_pads_after_with_minus_inf(size):
    x = torch.randn(2, 3, size, size)
    top, bottom = same_padding(size, 3, 2)
    ref = F.max_pool2d(F.pad(x, (top, bottom, top, bottom), value=float("-inf")), 3, 2)
    out = MaxPool2d(3, 2, "tf_same")(x)
    assert out.shape[-1] == -(-size // 2)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    sym = MaxPool2d(3, 2, "symmetric")(x)
    assert sym.shape == out.shape
    if size % 2 == 0:  # TF's odd pixel goes after: a different function from symmetric padding
        assert not torch.equal(sym, out)


@pytest.mark.parametrize("size", [8, 9])
def test_tf_same_strided_conv_matches_manual_padding(size):
    conv = Conv2d(3, 4, 3, stride=2, padding="tf_same")
    assert conv.dynamic_pad
    x = torch.randn(1, 3, size, size)
    top, bottom = same_padding(size, 3, 2)
    ref = F.conv2d(F.pad(x, (top, bottom, top, bottom)), conv.weight, stride=2)
    torch.testing.assert_close(conv(x), ref)
    assert not Conv2d(3, 4, 3, stride=1, padding="tf_same").dynamic_pad  # baked in when possible


def test_depthwise_segments_is_depthwise_then_pointwise():
    c, out = 6, 10
    m = SpectrumConv(c, out)  # segments=None: depthwise
    assert sum(p.numel() for p in m.parameters()) == c * 9 + c * out
    x = torch.randn(2, c, 9, 9)
    ref = F.conv2d(F.conv2d(x, m.spatial.weight, padding=1, groups=c), m.pointwise.weight)
    torch.testing.assert_close(m(x), ref)
    m_explicit = SpectrumConv(c, out, segments=c)
    assert sum(p.numel() for p in m_explicit.parameters()) == c * 9 + c * out


def test_one_segment_is_a_full_spatial_conv():
    c, out = 6, 10
    m = SpectrumConv(c, out, segments=1)
    assert m.spatial.weight.shape == (c, c, 3, 3)
    assert sum(p.numel() for p in m.parameters()) == c * c * 9 + c * out
    x = torch.randn(2, c, 9, 9)
    ref = F.conv2d(F.conv2d(x, m.spatial.weight, padding=1), m.pointwise.weight)
    torch.testing.assert_close(m(x), ref)


def test_intermediate_segments_group_the_channels():
    m = SpectrumConv(8, 8, segments=2)
    assert m.spatial.weight.shape == (8, 4, 3, 3)
    x = torch.randn(1, 8, 5, 5)
    ref = F.conv2d(F.conv2d(x, m.spatial.weight, padding=1, groups=2), m.pointwise.weight)
    torch.testing.assert_close(m(x), ref)


def test_pointwise_first_is_extreme_inception_with_activation_between():
    m = SpectrumConv(4, 6, order="pointwise_first", mid_activation="relu")
    assert m.spatial.weight.shape == (6, 1, 3, 3)  # segments default to the 6 channels it sees
    x = torch.randn(2, 4, 7, 7)
    ref = F.conv2d(F.relu(F.conv2d(x, m.pointwise.weight)), m.spatial.weight, padding=1, groups=6)
    torch.testing.assert_close(m(x), ref)


def test_mid_norm_and_elu_sit_between_the_ops():
    m = SpectrumConv(4, 6, mid_activation="elu", mid_norm=True).eval()
    with torch.no_grad():
        m.mid_norm.running_mean.uniform_(-1, 1)
        m.mid_norm.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 4, 7, 7)
    mid = F.elu(m.mid_norm(F.conv2d(x, m.spatial.weight, padding=1, groups=4)))
    torch.testing.assert_close(m(x), F.conv2d(mid, m.pointwise.weight))
    assert m.pointwise.bias is None and m.spatial.bias is None


def test_stride_and_dilation_apply_to_the_spatial_conv():
    m = SpectrumConv(4, 8, stride=2, dilation=2)
    assert m(torch.randn(1, 4, 16, 16)).shape == (1, 8, 8, 8)


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(segments=3), "valid: [1, 2, 4, 8]"),
    (dict(segments=0), "must divide"),
    (dict(order="spatial_first"), "depthwise_first"),
    (dict(mid_activation="gelu"), "'relu'"),
    (dict(padding="same"), "tf_same"),
    (dict(stride=0), "stride must be a positive integer"),
])
def test_bad_spectrum_arguments_raise_clear_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        SpectrumConv(8, 8, **kwargs)


def test_pointwise_first_segments_must_divide_out_channels():
    with pytest.raises(ConfigError, match="out_channels"):
        SpectrumConv(8, 6, segments=4, order="pointwise_first")


def test_classifier_head_applies_dropout_only_in_training():
    head = ClassifierHead(16, 5, fc_layers=(32,), dropout=0.5)
    x = torch.randn(4, 16, 2, 2)
    head.train()
    assert not torch.equal(head(x), head(x))  # timm's legacy head computes dropout and drops it
    head.eval()
    torch.testing.assert_close(head(x), head(x))
    assert head(x, pre_logits=True).shape == (4, 32)


def test_classifier_head_without_classes_returns_pooled_features():
    head = ClassifierHead(16, 0)
    x = torch.randn(3, 16, 4, 4)
    torch.testing.assert_close(head(x), x.mean((2, 3)))


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(num_classes=-1), "num_classes"), (dict(num_classes=3, dropout=1.0), "dropout"),
    (dict(num_classes=3, fc_layers=(0,)), "fc_layers")])
def test_bad_head_arguments(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        ClassifierHead(8, **kwargs)


def test_check_images_messages():
    with pytest.raises(InputError, match=r"\(N, 3, H, W\)"):
        check_images(torch.zeros(3, 80, 80), 3, 71)
    with pytest.raises(InputError, match="minimum of 71x71"):
        check_images(torch.zeros(1, 3, 70, 80), 3, 71)
    check_images(torch.zeros(1, 3, 71, 71), 3, 71)


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
