import pytest
import torch

from xception import InceptionV3, create_model, list_models, model_config
from xception.errors import ConfigError


def test_named_models_are_listed():
    assert {"xception", "xception_small", "inception_v3"} <= set(list_models())


def test_unknown_model_name_lists_the_choices():
    with pytest.raises(ConfigError, match="unknown model 'xceptoin'; available: .*xception_small"):
        create_model("xceptoin")


def test_unknown_override_lists_valid_settings():
    with pytest.raises(ConfigError, match=r"has no setting\(s\) \['residuals'\]; valid: .*residual"):
        create_model("xception", residuals=False)


def test_model_config_builds_no_weights_and_takes_lists():
    cfg = model_config("xception_small", entry_channels=[8, 16, 32])
    assert cfg.entry_channels == (8, 16, 32)


def test_inception_v3_baseline_has_the_same_head_options():
    m = create_model("inception_v3", num_classes=7, fc_layers=(32,), dropout=0.5, in_chans=1).eval()
    assert isinstance(m, InceptionV3)
    with torch.no_grad():
        f = m.forward_features(torch.randn(1, 1, 299, 299))
        assert f.shape == (1, 2048, 8, 8)
        assert m.forward_head(f).shape == (1, 7)
    assert [mod.out_features for mod in m.head.fc if hasattr(mod, "out_features")] == [32]
    m.reset_classifier(3)
    assert m.config.num_classes == 3 and m.get_classifier().out_features == 3
    assert not hasattr(m, "AuxLogits") and all(n != "fc" for n, _ in m.named_children())
