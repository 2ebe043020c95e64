"""The depthwise conv for maps smaller than its kernel: same outputs and gradients as PyTorch's,
and it is what a CPU training step of a 32 px model runs in its exit flow."""

import pytest
import torch
import torch.nn.functional as F

import xception
import xception.models.small_maps as depthwise
from xception.models.layers import Conv2d, PointwiseConv2d


def _grads(fn, x, w):
    x = x.detach().clone().requires_grad_()
    w = w.detach().clone().requires_grad_()
    y = fn(x, w)
    y.backward(torch.linspace(-1, 2, y.numel()).view_as(y))
    return y.detach(), x.grad, w.grad


@pytest.mark.parametrize("size,kernel,stride,padding,dilation", [
    ((2, 2), 3, 1, 1, 1),   # Xception's exit flow at 32 px
    ((1, 1), 3, 1, 1, 1),
    ((2, 3), 3, 1, 1, 1),   # one side large enough
    ((2, 2), 3, 2, 1, 1),
    ((2, 5), 3, 2, 1, 1),   # strided, more than one output column
    ((1, 2), 5, 1, 2, 1),
    ((2, 2), 3, 1, 2, 2),   # dilated (aligned Xception's exit flow)
    ((3, 3), 3, 1, 0, 1),   # valid padding: equal size, still PyTorch's path
])
def test_small_map_depthwise_matches_pytorch(size, kernel, stride, padding, dilation):
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(4, 6, *size, generator=gen) + 0.5).contiguous(memory_format=torch.channels_last)
    w = torch.randn(6, 1, kernel, kernel, generator=gen)
    s, p, d = (stride, stride), (padding, padding), (dilation, dilation)
    ref = _grads(lambda a, b: F.conv2d(a, b, None, s, p, d, groups=6), x, w)
    got = _grads(lambda a, b: depthwise.depthwise_conv2d(a, b, s, p, d), x, w)
    for r, g in zip(ref, got, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-5)


def test_conv2d_takes_the_path_only_where_it_pays():
    conv = Conv2d(8, 8, 3, groups=8)
    small = torch.randn(2, 8, 2, 2, requires_grad=True)
    large = torch.randn(2, 8, 4, 4, requires_grad=True)
    assert type(conv(small).grad_fn).__name__ == "SmallMapDepthwiseConvBackward"
    assert type(conv(large).grad_fn).__name__ == "ConvolutionBackward0"
    with torch.no_grad():
        assert conv(small).grad_fn is None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert type(conv(small).grad_fn).__name__ != "SmallMapDepthwiseConvBackward"
    grouped = Conv2d(8, 8, 3, groups=4)  # not depthwise: PyTorch's conv
    assert type(grouped(small).grad_fn).__name__ == "ConvolutionBackward0"


def _small_model_step(tiny: dict):
    """``xception_small`` (tiny widths) and a 32 px batch, channels_last as training runs them."""
    model = xception.create_model("xception_small", **tiny).to(memory_format=torch.channels_last)
    x = torch.randn(4, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    return model, x, torch.tensor([0, 1, 2, 3])


def _step_grads(model, x, y) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def _assert_same_grads(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    for name, g in want.items():
        scale = g.norm().clamp_min(1e-12)
        assert (got[name] - g).norm() / scale < 1e-5, name


def test_model_gradients_equal_with_and_without_the_path(monkeypatch, tiny):
    """A 32 px training step of the small model: the exit flow's depthwise convs run on 2x2 maps;
    every parameter's gradient equals the one PyTorch's conv gives."""
    model, x, y = _small_model_step(tiny)
    calls = []
    real = depthwise.SmallMapDepthwiseConv.backward

    def counted(ctx, g):
        calls.append(g.shape)
        return real(ctx, g)

    monkeypatch.setattr(depthwise.SmallMapDepthwiseConv, "backward", staticmethod(counted))
    got = _step_grads(model, x, y)
    assert calls and all(shape[-1] == 2 for shape in calls)  # the exit flow's 2x2 maps
    monkeypatch.setattr(depthwise, "needs_small_map_path", lambda *a: False)
    monkeypatch.setattr("xception.models.layers.needs_small_map_path", lambda *a: False)
    _assert_same_grads(got, _step_grads(model, x, y))


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("size", [(1, 1), (2, 2), (3, 3), (4, 4)])
def test_pointwise_as_a_matrix_product_matches_the_conv(size, bias):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(5, 12, *size, generator=gen).contiguous(memory_format=torch.channels_last)
    w = torch.randn(7, 12, 1, 1, generator=gen)
    b = torch.randn(7, generator=gen) if bias else None
    ref = _grads(lambda a, c: F.conv2d(a, c, b), x, w)
    got = _grads(lambda a, c: depthwise.pointwise_conv2d(a, c, b), x, w)
    for r, g in zip(ref, got, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-5)
    y = depthwise.pointwise_conv2d(x, w, b)
    assert y.is_contiguous(memory_format=torch.channels_last)  # as the conv's output would be


def test_pointwise_conv_takes_the_matrix_path_only_where_it_pays():
    conv = PointwiseConv2d(8, 16)
    small = torch.randn(2, 8, 4, 4).contiguous(memory_format=torch.channels_last)
    assert type(conv(small).grad_fn).__name__ == "PermuteBackward0"  # F.linear on the NHWC view
    large = torch.randn(2, 8, 5, 5).contiguous(memory_format=torch.channels_last)
    assert type(conv(large).grad_fn).__name__ == "ConvolutionBackward0"
    nchw = torch.randn(2, 8, 4, 4)  # its NHWC view would need a copy
    assert type(conv(nchw).grad_fn).__name__ == "ConvolutionBackward0"
    with torch.no_grad():  # inference keeps the conv (no faster there)
        assert not depthwise.needs_matmul_path(small, conv.weight)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # measured without autocast: the conv
        assert type(conv(small).grad_fn).__name__ == "ConvolutionBackward0"
    assert conv.weight.shape == (16, 8, 1, 1) and set(conv.state_dict()) == {"weight"}


def test_model_gradients_equal_with_and_without_the_pointwise_path(monkeypatch, tiny):
    """A 32 px training step of the small model: the middle and exit flows' 1x1 convs (4x4 and
    2x2 maps) run as matrix products; every parameter's gradient equals the conv's."""
    model, x, y = _small_model_step(tiny)
    maps = []
    real = depthwise.pointwise_conv2d

    def counted(a, w, b=None):
        maps.append(tuple(a.shape[-2:]))
        return real(a, w, b)

    monkeypatch.setattr("xception.models.layers.pointwise_conv2d", counted)
    got = _step_grads(model, x, y)
    middle = xception.models.registry.model_config("xception_small", **tiny).middle_repeats * 3
    assert maps.count((4, 4)) >= middle and (2, 2) in maps and max(maps) <= (4, 4)
    monkeypatch.setattr("xception.models.layers.needs_matmul_path", lambda *a: False)
    maps.clear()
    want = _step_grads(model, x, y)
    assert not maps
    _assert_same_grads(got, want)


def test_every_gradient_is_laid_out_like_its_parameter():
    """The gradient layout contract, which DDP's bucket views rely on (else a UserWarning and a
    copy per gradient per step): on 28 px inputs both small-map paths run (1x1 convs as matrix
    products, depthwise weight gradients tap by tap) and must return gradients with their
    channels_last weights' strides."""
    torch.manual_seed(0)
    model = xception.create_model("xception_tiny", num_classes=10).to(
        memory_format=torch.channels_last)
    x = torch.randn(2, 3, 28, 28).to(memory_format=torch.channels_last)
    model(x).sum().backward()
    off = [name for name, p in model.named_parameters() if p.grad.stride() != p.stride()]
    assert not off, off
