"""fuse_model: the fused model is the same model, on the PyTorch fallback and on the
Triton kernels (interpreted on CPU)."""

import copy

import pytest
import torch

import xception
from xception.fast.fuse import FusedStem, FusedXceptionBlock, fuse_model, unfuse
from xception.fast.kernels.launch import use_backend
from xception.fast.optimize import relative_error
from xception.models.xception import XceptionBlock

pytestmark = pytest.mark.usefixtures("one_thread")


# Each parameter's gradient is compared with its own size, max |grad|. Gradients that are zero
# but for float32 rounding (the mid_norm variant's inner-BN biases: the pointwise conv and the
# training-mode BN after them cancel any constant shift) have no size of their own: below
# ZERO_GRAD of the model's largest gradient, the fused one must be below it too. Measured on
# these models: such gradients are <= 2e-7 of the largest (fused <= 4e-7), all others >= 1e-4.
ZERO_GRAD = 1e-5


def gradient_errors(model: torch.nn.Module, fused: torch.nn.Module
                    ) -> tuple[dict[str, float], dict[str, float]]:
    """({parameter: max |fused grad - grad| / max |grad|}, {parameter whose gradient is below
    the floor: max |fused grad| / floor})."""
    largest = max(float(p.grad.abs().max()) for p in model.parameters())
    floor = ZERO_GRAD * largest
    errors, zeros = {}, {}
    for (name, a), b in zip(model.named_parameters(), fused.parameters(), strict=True):
        own = float(a.grad.abs().max())
        if own < floor:
            zeros[name] = float(b.grad.abs().max()) / floor
        else:
            errors[name] = float((b.grad - a.grad).abs().max()) / own
    return errors, zeros


def compare(model, fused, x, training, tol, grad_tol=None):
    """Output within ``tol`` (of its largest value), each gradient within ``grad_tol`` (default
    ``tol``) of its own size, buffers within ``tol``."""
    model.train(training)
    fused.train(training)
    g = torch.randn(x.shape[0], model.num_classes)
    y1, y2 = model(x), fused(x)
    (y1 * g).sum().backward()
    (y2 * g).sum().backward()
    assert relative_error(y2, y1) <= tol
    errors, zeros = gradient_errors(model, fused)
    worst = max(errors, key=errors.get)
    assert errors[worst] <= (grad_tol or tol), (worst, errors[worst])
    assert all(z <= 1.0 for z in zeros.values()), zeros  # ~0, and ~0 fused too
    for (name, a), b in zip(model.named_buffers(), fused.buffers(), strict=True):
        err = float((b.float() - a.float()).abs().max()) / max(float(a.abs().max()), 1e-2)
        assert err <= tol, (name, err)


def test_gradient_check_holds_each_parameter_to_its_own_size():
    """A small gradient off by 0.1% fails (the old floor, 1% of the largest gradient, let it
    pass); a zero gradient must stay zero in the fused model."""
    model, fused = torch.nn.Linear(2, 3), torch.nn.Linear(2, 3)
    model.weight.grad = torch.full((3, 2), 1.0)
    model.bias.grad = torch.tensor([1e-3, -1e-3, 0.0])
    fused.weight.grad = model.weight.grad.clone()
    fused.bias.grad = model.bias.grad * 1.001
    errors, zeros = gradient_errors(model, fused)
    assert errors["weight"] == 0.0 and errors["bias"] == pytest.approx(1e-3, rel=1e-3)
    assert zeros == {}
    model.bias.grad = torch.tensor([1e-9, 0.0, 0.0])
    fused.bias.grad = torch.tensor([0.0, 2e-5, 0.0])
    errors, zeros = gradient_errors(model, fused)
    assert "bias" not in errors and zeros["bias"] == pytest.approx(2.0)


def test_fusing_keeps_parameters_and_state_dict(tiny):
    model = xception.create_model("xception_small", **tiny)
    keys = list(model.state_dict())
    params = list(model.parameters())
    counts = fuse_model(model)
    assert counts == {"fused": 7, "kept": 0}
    assert isinstance(model.stem, FusedStem)
    assert all(isinstance(b, FusedXceptionBlock) for b in model.middle_flow)
    assert list(model.state_dict()) == keys
    assert all(p is q for p, q in zip(model.parameters(), params, strict=True))
    assert model.stem.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    unfuse(model)
    assert type(model.middle_flow[0]) is XceptionBlock


@pytest.mark.parametrize("overrides", [{}, dict(residual=False), dict(padding="symmetric")],
                         ids=["paper", "no_residual", "symmetric"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_fused_equals_unfused_on_pytorch_fallback(tiny, overrides, training):
    model = xception.create_model("xception_small", **tiny, **overrides)
    fused = copy.deepcopy(model)
    fuse_model(fused)
    with use_backend("torch"):
        compare(model, fused, torch.randn(2, 3, 32, 32), training, tol=1e-4)


@pytest.mark.parametrize("overrides", [dict(segments=4), dict(order="pointwise_first"),
                                       dict(mid_norm=True)],
                         ids=["segments", "pointwise_first", "mid_norm"])
def test_variants_the_kernels_do_not_cover_are_kept(tiny, overrides):
    model = xception.create_model("xception_small", **tiny, **overrides)
    fused = copy.deepcopy(model)
    assert fuse_model(fused) == {"fused": 0, "kept": 7}
    # mid_norm: BN weights whose gradient nearly cancels (the next training-mode BN undoes their
    # scale), 1e-4..1e-3 of the largest, differ by up to 5e-4 of their own size between the
    # NCHW and channels_last convolutions of the same PyTorch ops
    compare(model, fused, torch.randn(2, 3, 32, 32), True, tol=1e-4, grad_tol=1e-3)


@pytest.mark.skipif(not __import__("importlib").util.find_spec("triton"),
                    reason="needs triton")
def test_fused_model_on_kernels_equals_unfused(tiny):
    """The whole model through the Triton kernels (interpreted on CPU): training step."""
    from xception.fast.kernels.launch import kernels_run_on

    model = xception.create_model("xception_small", **tiny, min_input_size=16)
    fused = copy.deepcopy(model)
    fuse_model(fused)
    x = torch.randn(2, 3, 24, 24)  # at 16 px the exit flow's BNs see 2 values: ill-conditioned
    assert kernels_run_on(x) or torch.cuda.is_available()
    if torch.cuda.is_available():
        model, fused, x = model.cuda(), fused.cuda(), x.cuda()
    compare(model, fused, x, True, tol=1e-4)


@pytest.mark.skipif(not __import__("importlib").util.find_spec("triton"),
                    reason="needs triton")
def test_folded_model_on_kernels_equals_eval_model(tiny):
    """optimize_for_inference(kernels=True): folded BNs, fused ReLU/pool/add kernels."""
    from weights_helpers import randomize_bn

    from xception.fast import optimize_for_inference

    model = randomize_bn(xception.create_model("xception_small", **tiny, min_input_size=16)).eval()
    fast = optimize_for_inference(model, kernels=True, verify=False)
    assert isinstance(fast.middle_flow[0], FusedXceptionBlock)
    assert isinstance(fast.stem, FusedStem)
    x = torch.randn(2, 3, 24, 24)
    if torch.cuda.is_available():
        model, fast, x = model.cuda(), fast.cuda(), x.cuda()
    with torch.no_grad():
        assert relative_error(fast(x), model(x)) <= 1e-4


@pytest.mark.skipif(not __import__("importlib").util.find_spec("triton"),
                    reason="needs triton")
def test_a_failing_kernel_falls_back_to_pytorch_with_one_warning(tiny, monkeypatch):
    """A kernel that cannot launch (or compile) never crashes eval/predict: optimize_for_inference
    warns and returns the PyTorch-ops model, which computes the eval-mode function."""
    from weights_helpers import randomize_bn

    from xception.fast import optimize_for_inference
    from xception.fast.kernels import ops

    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("triton launch failed (planted)")

    monkeypatch.setattr(ops._DepthwiseConv, "forward", staticmethod(broken))
    model = randomize_bn(xception.create_model("xception_small", **tiny, min_input_size=16)).eval()
    with pytest.warns(RuntimeWarning, match="Triton kernels failed.*planted.*PyTorch's ops"):
        fast = optimize_for_inference(model, kernels=True, verify=False)
    assert calls  # the kernel path was tried
    assert not any(isinstance(m, (FusedXceptionBlock, FusedStem)) for m in fast.modules())
    x = torch.randn(2, 3, 24, 24)
    with torch.no_grad():
        assert relative_error(fast(x), model(x)) <= 1e-4


def test_kernels_are_off_by_default_on_cuda_until_switched_on(monkeypatch):
    from xception.fast.kernels import launch

    monkeypatch.delenv("XCEPTION_CUDA_KERNELS", raising=False)
    assert launch.KERNELS_VERIFIED_ON_GPU is False  # no recorded GPU correctness run yet
    assert launch.cuda_kernels_by_default() is False
    monkeypatch.setenv("XCEPTION_CUDA_KERNELS", "1")
    assert launch.cuda_kernels_by_default() is True
