"""The aligned variants are configs of the same builder; the paper model stays exactly as it was."""

from __future__ import annotations

import pytest
import torch

from xception import ConfigError, block_table, create_model, model_config

# state-dict names other code (and saved files) rely on
PAPER_KEYS = ["stem.conv1.weight", "entry_flow.block2.sepconvs.0.spatial.weight",
              "entry_flow.block2.sepconvs.0.pointwise.weight", "entry_flow.block2.bns.0.running_var",
              "entry_flow.block2.shortcut.conv.weight", "middle_flow.block5.sepconvs.2.spatial.weight",
              "exit_flow.block13.shortcut.bn.weight", "exit_flow.block14.bns.1.bias",
              "head.classifier.weight"]


def test_paper_model_is_unchanged():
    model = create_model("xception")
    assert sum(p.numel() for p in model.parameters()) == 22_855_952  # paper, Table 3
    keys = model.state_dict().keys()
    assert all(k in keys for k in PAPER_KEYS)
    assert not any("mid_norm" in k for k in keys)
    specs = [s for flow in block_table(model.config).values() for s in flow]
    assert [s.name for s in specs] == [f"block{i}" for i in range(2, 15)]
    assert all(not s.strided_conv and s.dilation == 1 for s in specs)
    assert [s.downsample for s in specs].count(True) == 4


@pytest.mark.parametrize("name", ["xception41", "xception65", "xception71"])
@pytest.mark.parametrize("output_stride, size", [(32, 10), (16, 19), (8, 38)])
def test_output_stride_turns_strides_into_dilation(name, output_stride, size):
    cfg = model_config(name, output_stride=output_stride)
    specs = [s for flow in block_table(cfg).values() for s in flow]
    assert sum(s.downsample for s in specs) == {32: 4, 16: 3, 8: 2}[output_stride]
    assert max(s.dilation for s in specs) == 32 // output_stride
    if name == "xception41" and output_stride == 8:  # a 299 px image: size of the last map
        model = create_model(name, output_stride=output_stride, num_classes=0).eval()
        with torch.no_grad():
            assert model.forward_features(torch.zeros(1, 3, 299, 299)).shape[-1] == size
        assert model.feature_info[-1]["reduction"] == output_stride


def test_aligned_blocks():
    specs = {s.name: s for flow in block_table(model_config("xception71")).values() for s in flow}
    assert len(specs) == 23  # 5 entry + 16 middle + 2 exit blocks, as timm's xception71
    assert [specs[f"block{i}"].downsample for i in range(2, 7)] == [True, False, True, False, True]
    assert all(len(specs[f"block{i}"].widths) == 3 for i in range(2, 25))
    assert specs["block24"].mid_relu and not specs["block23"].mid_relu
    assert specs["block24"].widths == (1536, 1536, 2048)


def test_bad_aligned_settings():
    with pytest.raises(ConfigError, match="strided_conv"):
        model_config("xception", output_stride=16)
    with pytest.raises(ConfigError, match="output_stride"):
        model_config("xception41", output_stride=4)
    with pytest.raises(ConfigError, match="entry_strides"):
        model_config("xception71", entry_strides=(2, 2))
    with pytest.raises(ConfigError, match="downsample"):
        model_config("xception", downsample="avg_pool")
