import itertools

import pytest
import torch
from torch import nn

from xception import Xception, XceptionConfig, block_table, create_model, model_config
from xception.errors import ConfigError, InputError
from xception.models.layers import Conv2d, MaxPool2d, SpectrumConv
from xception.models.xception import Shortcut

PAPER_PARAMS = 22_855_952          # paper Table 3 (Keras: 22,910,480 total incl. BN statistics)
KERAS_TOTAL_NO_TOP = 20_861_480    # Keras model.count_params() with include_top=False


def trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def bn_statistics(model: nn.Module) -> int:
    return sum(buffer.numel() for name, buffer in model.named_buffers()
               if name.endswith(("running_mean", "running_var")))


@pytest.fixture(scope="module")
def paper() -> Xception:
    return create_model("xception").eval()


def test_paper_parameter_count(paper):
    assert trainable(paper) == PAPER_PARAMS
    assert trainable(paper) + bn_statistics(paper) == 22_910_480


def test_paper_parameter_count_without_head():
    model = create_model("xception", num_classes=0)
    assert trainable(model) + bn_statistics(model) == KERAS_TOTAL_NO_TOP
    assert trainable(model) == PAPER_PARAMS - (2048 * 1000 + 1000)


def test_residual_off_removes_exactly_the_shortcut_convs_and_bns():
    with_residual, without = create_model("xception"), create_model("xception", residual=False)
    shortcuts = [(64, 128), (128, 256), (256, 728), (728, 1024)]
    # 1x1 conv + BN gamma/beta
    expected = sum(inputs * outputs + 2 * outputs for inputs, outputs in shortcuts)
    assert trainable(with_residual) - trainable(without) == expected
    assert sum(isinstance(module, Shortcut) for module in with_residual.modules()) == 4
    assert not any(isinstance(module, Shortcut) for module in without.modules())
    assert all(block.shortcut is None for block in without.middle_flow)


def test_paper_block_table_reads_like_figure_5():
    table = block_table(XceptionConfig())
    names = [s.name for flow in table.values() for s in flow]
    assert names == [f"block{i}" for i in range(2, 15)]
    assert [s.widths for s in table["entry_flow"]] == [(128, 128), (256, 256), (728, 728)]
    assert len(table["middle_flow"]) == 8
    assert all(s.widths == (728, 728, 728) and not s.downsample for s in table["middle_flow"])
    block13, block14 = table["exit_flow"]
    assert block13.widths == (728, 1024) and block13.downsample and block13.residual
    assert block14.widths == (1536, 2048) and not block14.residual and block14.relu_last
    assert not table["entry_flow"][0].relu_first  # no ReLU before block2's first SepConv


@pytest.mark.parametrize(("size", "feature_size"), [(71, 3), (150, 5), (299, 10)])
def test_paper_feature_shapes(paper, size, feature_size):
    with torch.no_grad():
        features = paper.forward_features(torch.randn(1, 3, size, size))
        assert features.shape == (1, 2048, feature_size, feature_size)
        assert paper.forward_head(features).shape == (1, 1000)
        assert paper.forward_head(features, pre_logits=True).shape == (1, 2048)


def test_small_variant_keeps_32px_alive():
    model = create_model("xception_small").eval()
    with torch.no_grad():
        stages = model.forward_stages(torch.randn(2, 3, 32, 32))
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert stages[-1].shape == (2, 1024, 2, 2)
    assert len(stages) == len(model.feature_info) == 14
    for out, info in zip(stages, model.feature_info, strict=True):
        assert out.shape[1] == info["num_chs"]
        assert out.shape[-1] == 32 // info["reduction"]


def test_paper_feature_info_reductions(paper):
    with torch.no_grad():
        stages = paper.forward_stages(torch.randn(1, 3, 299, 299))
    for out, info in zip(stages, paper.feature_info, strict=True):
        assert out.shape[1] == info["num_chs"]
        assert abs(out.shape[-1] - 299 / info["reduction"]) <= 2.5  # valid stem convs trim 2-5 px
    assert paper.feature_info[-1] == dict(num_chs=2048, reduction=32, module="exit_flow.block14")


def test_input_below_71px_is_rejected_clearly(paper):
    with pytest.raises(InputError, match="70x70 is smaller than this model's minimum of 71x71"):
        paper(torch.randn(1, 3, 70, 70))
    with pytest.raises(InputError, match=r"\(N, 3, H, W\)"):
        paper(torch.randn(1, 1, 80, 80))


def test_reset_classifier_and_fc_layers():
    model = create_model("xception", fc_layers=(4096, 4096), num_classes=17)
    fc_parameters = 2048 * 4096 + 4096 + 4096 * 4096 + 4096
    assert trainable(model) == PAPER_PARAMS - 2049 * 1000 + fc_parameters + 4097 * 17
    model.reset_classifier(5)
    assert model.num_classes == 5 and model.config.num_classes == 5
    assert model.get_classifier().out_features == 5
    model.reset_classifier(0)
    assert isinstance(model.get_classifier(), nn.Identity)


OPTIONS = list(itertools.product(
    [True, False],                          # residual
    ["depthwise_first", "pointwise_first"],  # order
    [None, "relu", "elu"],                  # mid_activation
    [False, True],                          # mid_norm
    [1, 2, None],                           # segments (None = depthwise)
    ["tf_same", "symmetric"],               # padding
))


@pytest.mark.parametrize(("residual", "order", "activation", "mid_norm", "segments", "padding"),
                         OPTIONS)
def test_every_option_combination_builds_and_backpropagates(tiny, residual, order, activation,
                                                            mid_norm, segments, padding):
    model = create_model("xception_small", residual=residual, order=order,
                         mid_activation=activation, mid_norm=mid_norm, segments=segments,
                         padding=padding, num_classes=3, **tiny)
    x = torch.randn(2, 3, 17, 16)  # odd and even sizes: both padding branches run
    model(x).logsumexp(1).sum().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
    convs = [module for module in model.modules() if module.__class__.__name__ == "SpectrumConv"]
    assert all(c.order == order for c in convs)
    expected = {None: lambda c: c.spatial.in_channels}.get(segments, lambda c: segments)
    assert all(c.spatial.groups == expected(c) for c in convs)


def test_spectrum_settings_change_the_parameter_count(tiny):
    counts = {s: trainable(create_model("xception_small", segments=s, **tiny)) for s in (1, 2, None)}
    assert counts[1] > counts[2] > counts[None]


@pytest.mark.parametrize(("overrides", "message"), [
    (dict(segments=3), "does not divide"),
    (dict(order="sideways"), "order"),
    (dict(padding="same"), "padding"),
    (dict(entry_channels=()), "entry_channels"),
    (dict(stem_channels=(8, 0)), "positive integers"),
    (dict(middle_repeats=-1), "middle_repeats"),
    (dict(stem_stride=3), "stem_stride"),
])
def test_bad_model_settings_raise_before_building(overrides, message):
    with pytest.raises(ConfigError, match=message):
        create_model("xception", **overrides)


@pytest.mark.parametrize("segments", [3, 0, -2, 2.0, True, "2"])
def test_a_config_and_a_spectrum_conv_apply_the_same_segments_rule(tiny, segments):
    """One rule (``layers.check_segments``): the config applies it to every channel count its
    block table gives a spatial conv, before building anything; the layer to its own. What one
    refuses the other refuses too, with the same message and the same valid choices."""
    channels = model_config("xception_small", **tiny).spatial_channels()
    assert channels == {8, 16, 32, 64}  # the tiny widths; their common divisors are 1, 2, 4, 8
    with pytest.raises(ConfigError) as from_config:
        model_config("xception_small", segments=segments, **tiny)
    with pytest.raises(ConfigError) as from_layer:
        SpectrumConv(8, 8, segments=segments)
    for error in (from_config, from_layer):
        assert f"segments={segments!r} must divide the channels" in str(error.value)
        assert str(error.value).endswith("valid: [1, 2, 4, 8]")


def test_config_round_trips_through_a_dict():
    config = XceptionConfig(residual=False, fc_layers=(16,), segments=4)
    assert model_config("xception", **config.to_dict()) == config
    with pytest.raises(ConfigError, match=r"has no setting\(s\) \['widht'\]"):
        model_config("xception", widht=3)


def test_block_table_is_built_once_per_config(monkeypatch):
    import xception.models.xception as xception_module

    calls = []
    real = xception_module.block_table
    monkeypatch.setattr(xception_module, "block_table",
                        lambda config: calls.append(config) or real(config))
    config = XceptionConfig(segments=4, stem_channels=(8, 8), entry_channels=(8, 8, 8),
                            middle_channels=8, middle_repeats=1, exit_channels=(8, 8),
                            final_channels=(8, 8))
    Xception(config)
    Xception(config)
    assert len(calls) == 1  # validation (segments) and both models read the one table


def test_first_relu_of_a_block_does_not_modify_the_residual_input(tiny):
    model = create_model("xception_small", **tiny).eval()
    block = model.middle_flow[0]
    x = torch.randn(1, 32, 4, 4)
    before = x.clone()
    block(x)
    torch.testing.assert_close(x, before)


@pytest.mark.parametrize("padding", ["tf_same", "symmetric"])
def test_any_size_from_71(padding):
    """Odd and even maps at every stage; both rules give ceil(n / 2) after each stride 2."""
    model = create_model("xception", padding=padding, num_classes=0).eval()
    with torch.no_grad():
        for size in (71, 80):  # 71: odd maps only; 80: block13's pool sees an even map
            side = (size - 3) // 2 + 1 - 2  # the stem's two valid 3x3 convs
            for _ in range(4):
                side = -(-side // 2)
            features = model.forward_features(torch.zeros(1, 3, size, size))
            assert features.shape == (1, 2048, side, side)
        with pytest.raises(InputError, match="minimum of 71x71"):
            model(torch.zeros(1, 3, 70, 70))


def test_set_numerics_changes_every_layer_and_the_config():
    model = create_model("xception")
    model.set_numerics(padding="symmetric", bn_eps=1e-5)
    assert model.config.padding == "symmetric" and model.config.stem_padding == "valid"
    modes = {module.pad_mode for name, module in model.named_modules()
             if isinstance(module, (Conv2d, MaxPool2d)) and not name.startswith("stem.")}
    assert modes == {"symmetric"}
    assert {module.eps for module in model.modules()
            if isinstance(module, torch.nn.BatchNorm2d)} == {1e-5}
    assert model.stem.conv1.pad_mode == "valid"
