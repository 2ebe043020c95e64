import json

import pytest

from xception.errors import ConfigError
from xception.training.config import RunConfig, apply_overrides


def test_overrides_are_typed_and_routed():
    cfg = apply_overrides(RunConfig(), ["optimizer.lr=0.3", "train.epochs=2", "data.augment=false",
                                       "model.residual=false", "model.entry_channels=[8,16,32]",
                                       "model.name=xception"])
    assert cfg.optimizer.lr == 0.3 and isinstance(cfg.optimizer.lr, float)
    assert cfg.train.epochs == 2 and cfg.data.augment is False
    assert cfg.model.name == "xception"
    assert cfg.model.overrides == {"residual": False, "entry_channels": [8, 16, 32]}


def test_integer_given_for_a_float_field_becomes_float():
    assert apply_overrides(RunConfig(), ["optimizer.lr=1"]).optimizer.lr == 1.0
    assert apply_overrides(RunConfig(), ["optim.lr=2"]).optimizer.lr == 2.0  # short alias


@pytest.mark.parametrize(("item", "message"), [
    ("optimizer.lrr=0.1", r"unknown key 'optimizer.lrr'; valid: \['optimizer.name', 'optimizer.lr'"),
    ("optimiser.lr=0.1", "unknown section 'optimiser'"),
    ("lr=0.1", "section.key=value"),
    ("optimizer.lr=fast", "optimizer.lr must be float, got 'fast'"),
    ("train.epochs=2.5", "train.epochs must be int"),
    ("optimizer.name=lamb",
     r"optimizer.name='lamb' is not valid; choose one of \['sgd', 'adamw', 'rmsprop'\]"),
    ("data.augment=maybe", "data.augment must be bool"),
])
def test_bad_overrides_are_rejected_with_the_valid_choices(item, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(RunConfig(), [item])


def test_json_round_trip_and_file_errors(tmp_path):
    cfg = apply_overrides(RunConfig(), ["train.seed=3", "model.segments=4"])
    path = tmp_path / "c.json"
    path.write_text(cfg.to_json())
    assert RunConfig.load(path) == cfg
    with pytest.raises(ConfigError, match="does not exist"):
        RunConfig.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(ConfigError, match="not readable JSON"):
        RunConfig.load(tmp_path / "bad.json")
    (tmp_path / "unknown.json").write_text(json.dumps({"train": {"epochz": 1}}))
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['train.epochz'\]"):
        RunConfig.load(tmp_path / "unknown.json")
