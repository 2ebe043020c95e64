"""optimize_for_inference: BatchNorm folding and channels_last give the eval-mode function."""

import warnings

import pytest
import torch
from torch import nn
from weights_helpers import randomize_bn

import xception
from xception.fast import fold_batchnorm, optimize_for_inference, relative_error

pytestmark = pytest.mark.usefixtures("one_thread")


def assert_same_function(model, size, batch=2, tol=1e-4, **kwargs):
    model = randomize_bn(model).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a failed self-check warns: that must not happen here
        fast = optimize_for_inference(model, **kwargs)
    x = torch.randn(batch, 3, size, size)
    with torch.no_grad():
        err = relative_error(fast(x), model(x))
    assert err <= tol, err
    return fast


VARIANTS = {
    "paper_options": {},
    "no_residual": dict(residual=False),
    "segments_4": dict(segments=4),
    "pointwise_first": dict(order="pointwise_first"),
    "mid_norm_relu": dict(mid_norm=True, mid_activation="relu"),
    "mid_norm_pointwise_first": dict(mid_norm=True, order="pointwise_first"),
    "symmetric_padding": dict(padding="symmetric"),
}


@pytest.mark.parametrize("overrides", VARIANTS.values(), ids=VARIANTS.keys())
def test_folded_variants_equal_eval_model(tiny, overrides):
    model = xception.create_model("xception_small", **tiny, **overrides)
    fast = assert_same_function(model, size=32)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())


def test_paper_model_at_299():
    # 299 px makes block3's pool asymmetric (74 -> 37): TF's extra pixel after the input
    model = xception.create_model("xception")
    fast = assert_same_function(model, size=299, batch=1)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())



def test_inception_conv_bn_units_fold():
    from torchvision.models.inception import BasicConv2d, InceptionA

    net = nn.Sequential(BasicConv2d(3, 32, kernel_size=3, stride=2), InceptionA(32, 8))
    fast = assert_same_function(net, size=35, batch=2)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())


def test_inception_v3_folds():
    model = xception.create_model("inception_v3", width=0.125, num_classes=5, stem_stride=1,
                                  stem_pools=False, min_input_size=32)
    fast = assert_same_function(model, size=32, batch=2)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())


def test_original_model_is_untouched(tiny):
    model = xception.create_model("xception_small", **tiny).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimize_for_inference(model)
    assert model.training
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_fold_needs_eval_mode(tiny):
    with pytest.raises(ValueError, match="eval"):
        fold_batchnorm(xception.create_model("xception_small", **tiny).train())


def test_failed_self_check_falls_back_to_the_eval_model(tiny, monkeypatch):
    import xception.fast.optimize as opt

    def broken_fold(model):
        n = fold_batchnorm(model)
        next(p for p in model.parameters()).data.mul_(2)  # a folding bug
        return n

    monkeypatch.setattr(opt, "fold_batchnorm", broken_fold)
    model = randomize_bn(xception.create_model("xception_small", **tiny)).eval()
    with pytest.warns(RuntimeWarning, match="differs"):
        fast = optimize_for_inference(model)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(fast(x), model(x))


def test_compile_failure_falls_back_to_eager(tiny, monkeypatch):
    def failing_compile(model, **kwargs):
        def run(x):
            raise RuntimeError("no C++ compiler")
        return run

    monkeypatch.setattr(torch, "compile", failing_compile)
    model = randomize_bn(xception.create_model("xception_small", **tiny)).eval()
    fast = optimize_for_inference(model, compile=True)
    x = torch.randn(2, 3, 32, 32)
    with pytest.warns(RuntimeWarning, match="torch.compile failed"):
        y = fast(x)
    with torch.no_grad():
        assert relative_error(y, model(x)) <= 1e-4
    assert fast.config == model.config  # attributes come from the folded model
    with pytest.raises(xception.InputError):  # a real input error is not swallowed
        fast(torch.randn(2, 3, 8, 8))


def test_bfloat16_is_opt_in_with_float32_io(tiny):
    model = randomize_bn(xception.create_model("xception_small", **tiny)).eval()
    fast = optimize_for_inference(model, dtype=torch.bfloat16)
    assert next(fast.parameters()).dtype == torch.bfloat16
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        y = fast(x)
        err = relative_error(y, model(x))
    assert y.dtype == torch.float32
    assert 1e-5 < err <= 3e-2  # really computed in bfloat16, and still close
    assert next(optimize_for_inference(model).parameters()).dtype == torch.float32


@pytest.mark.slow
def test_compiled_equals_eval_model(tiny):
    """Real Inductor compilation with freezing (tens of seconds; the fallback is tested above)."""
    model = randomize_bn(xception.create_model("xception_small", **tiny)).eval()
    fast = optimize_for_inference(model, compile=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert relative_error(fast(x), model(x)) <= 1e-4
    assert not fast.compile_failed
