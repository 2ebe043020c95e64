import itertools

import pytest
import torch
from torch import nn

from xception import Xception, XceptionConfig, block_table, create_model, model_config
from xception.errors import ConfigError, InputError
from xception.models.layers import Conv2d, MaxPool2d
from xception.models.xception import Shortcut

PAPER_PARAMS = 22_855_952          # paper Table 3 (Keras: 22,910,480 total incl. BN statistics)
KERAS_TOTAL_NO_TOP = 20_861_480    # Keras model.count_params() with include_top=False


def trainable(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters() if p.requires_grad)


def bn_statistics(m: nn.Module) -> int:
    return sum(b.numel() for n, b in m.named_buffers() if n.endswith(("running_mean", "running_var")))


@pytest.fixture(scope="module")
def paper() -> Xception:
    return create_model("xception").eval()


def test_paper_parameter_count(paper):
    assert trainable(paper) == PAPER_PARAMS
    assert trainable(paper) + bn_statistics(paper) == 22_910_480


def test_paper_parameter_count_without_head():
    m = create_model("xception", num_classes=0)
    assert trainable(m) + bn_statistics(m) == KERAS_TOTAL_NO_TOP
    assert trainable(m) == PAPER_PARAMS - (2048 * 1000 + 1000)


def test_residual_off_removes_exactly_the_shortcut_convs_and_bns():
    with_res, without = create_model("xception"), create_model("xception", residual=False)
    shortcuts = [(64, 128), (128, 256), (256, 728), (728, 1024)]
    expected = sum(cin * cout + 2 * cout for cin, cout in shortcuts)  # 1x1 conv + BN gamma/beta
    assert trainable(with_res) - trainable(without) == expected
    assert sum(isinstance(m, Shortcut) for m in with_res.modules()) == 4
    assert not any(isinstance(m, Shortcut) for m in without.modules())
    assert all(b.shortcut is None for b in without.middle_flow)


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


@pytest.mark.parametrize(("size", "feat"), [(71, 3), (150, 5), (299, 10)])
def test_paper_feature_shapes(paper, size, feat):
    with torch.no_grad():
        f = paper.forward_features(torch.randn(1, 3, size, size))
        assert f.shape == (1, 2048, feat, feat)
        assert paper.forward_head(f).shape == (1, 1000)
        assert paper.forward_head(f, pre_logits=True).shape == (1, 2048)


def test_small_variant_keeps_32px_alive():
    m = create_model("xception_small").eval()
    with torch.no_grad():
        stages = m.forward_stages(torch.randn(2, 3, 32, 32))
        assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert stages[-1].shape == (2, 1024, 2, 2)
    assert len(stages) == len(m.feature_info) == 14
    for out, info in zip(stages, m.feature_info, strict=True):
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
    m = create_model("xception", fc_layers=(4096, 4096), num_classes=17)
    fc = 2048 * 4096 + 4096 + 4096 * 4096 + 4096
    assert trainable(m) == PAPER_PARAMS - 2049 * 1000 + fc + 4097 * 17
    m.reset_classifier(5)
    assert m.num_classes == 5 and m.config.num_classes == 5
    assert m.get_classifier().out_features == 5
    m.reset_classifier(0)
    assert isinstance(m.get_classifier(), nn.Identity)


OPTIONS = list(itertools.product(
    [True, False],                          # residual
    ["depthwise_first", "pointwise_first"],  # order
    [None, "relu", "elu"],                  # mid_activation
    [False, True],                          # mid_norm
    [1, 2, None],                           # segments (None = depthwise)
    ["tf_same", "symmetric"],               # padding
))


@pytest.mark.parametrize(("residual", "order", "act", "mid_norm", "segments", "padding"), OPTIONS)
def test_every_option_combination_builds_and_backpropagates(tiny, residual, order, act, mid_norm,
                                                            segments, padding):
    m = create_model("xception_small", residual=residual, order=order, mid_activation=act,
                     mid_norm=mid_norm, segments=segments, padding=padding, num_classes=3, **tiny)
    x = torch.randn(2, 3, 17, 16)  # odd and even sizes: both padding branches run
    m(x).logsumexp(1).sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    convs = [mod for mod in m.modules() if mod.__class__.__name__ == "SpectrumConv"]
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


def test_config_round_trips_through_a_dict():
    cfg = XceptionConfig(residual=False, fc_layers=(16,), segments=4)
    assert model_config("xception", **cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match=r"has no setting\(s\) \['widht'\]"):
        model_config("xception", widht=3)


def test_block_table_is_built_once_per_config(monkeypatch):
    import xception.models.xception as xmod

    calls = []
    real = xmod.block_table
    monkeypatch.setattr(xmod, "block_table", lambda cfg: calls.append(cfg) or real(cfg))
    cfg = XceptionConfig(segments=4, stem_channels=(8, 8), entry_channels=(8, 8, 8), middle_channels=8,
                         middle_repeats=1, exit_channels=(8, 8), final_channels=(8, 8))
    Xception(cfg)
    Xception(cfg)
    assert len(calls) == 1  # validation (segments) and both models read the one table


def test_first_relu_of_a_block_does_not_modify_the_residual_input(tiny):
    m = create_model("xception_small", **tiny).eval()
    block = m.middle_flow[0]
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
