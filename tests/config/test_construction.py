"""A run config is made once, from typed values: no dict round trips, files read once, the model
config made once for the settings and once for the data, and model fields that cannot collide
with the model section's own keys."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from conftest import TINY_MODEL

import xception.models.xception as xception_module
from xception.cli import train as train_cli
from xception.cli.main import main
from xception.config import (
    ModelSection,
    RunConfig,
    apply_overrides,
    merge_changes,
    parse_assignments,
    with_changes,
)
from xception.config import overrides as overrides_module
from xception.errors import ConfigError
from xception.models import XceptionConfig, list_models, model_config


@pytest.fixture
def constructions(monkeypatch) -> dict[str, int]:
    """How many Xception model configs (``__post_init__``) and block tables are made."""
    counts = {"configs": 0, "tables": 0}
    post_init, table = XceptionConfig.__post_init__, xception_module.block_table

    def counting_post_init(self):
        counts["configs"] += 1
        post_init(self)

    def counting_table(cfg):
        counts["tables"] += 1
        return table(cfg)

    monkeypatch.setattr(XceptionConfig, "__post_init__", counting_post_init)
    monkeypatch.setattr(xception_module, "block_table", counting_table)
    return counts


SHORT = ["--set", "train.max_steps=1", "--set", "data.train_subset=64", "--set",
         "data.val_subset=32", "--set", "train.threads=1", "--no-progress"]


@pytest.mark.parametrize("extra", [[], ["--model", "xception_small", *sum(
    (["--set", s] for s in [*TINY_MODEL, "model.residual=false"]), [])]])
def test_one_train_command_makes_the_model_config_twice(tmp_path, constructions, capsys, extra):
    """Twice, for a stated reason: once when the run config is made (validated before any data is
    read: a bad width fails in the first second) and once when fit knows the data's channel
    count (digits: 1 channel; the recipe's model has 3). Its block table is made once."""
    assert main(["train", *SHORT, *extra, "--out", str(tmp_path / "run")]) == 0
    assert "final val top-1" in capsys.readouterr().out
    assert constructions == {"configs": 2, "tables": 1}


def test_the_config_file_is_read_once(tmp_path, monkeypatch, capsys):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"train": {"seed": 3}, "model": {"overrides": {"dropout": 0.1}}}))
    reads = []
    read_bytes = Path.read_bytes

    def counting_read(self):
        reads.append(self.name)
        return read_bytes(self)

    monkeypatch.setattr(Path, "read_bytes", counting_read)
    assert main(["train", "--config", str(path), *SHORT, "--out", str(tmp_path / "run")]) == 0
    assert reads.count("c.json") == 1
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["train"]["seed"] == 3 and saved["model"]["overrides"] == {"dropout": 0.1}
    capsys.readouterr()


def _train_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    train_cli.register(parser.add_subparsers())
    return parser.parse_args(["train", *argv])


def test_flags_go_in_as_typed_values_and_only_set_text_is_parsed(monkeypatch):
    parsed = []
    parse_value = overrides_module.parse_value
    monkeypatch.setattr(overrides_module, "parse_value",
                        lambda text: parsed.append(text) or parse_value(text))
    cfg = train_cli.resolve_config(_train_args(["--epochs", "3", "--lr", "0.5", "--seed", "7",
                                                "--device", "cpu", "--compile", "--no-progress"]))
    assert parsed == []
    assert (cfg.train.epochs, cfg.optimizer.lr, cfg.train.seed, cfg.train.device) == (3, 0.5, 7, "cpu")
    assert cfg.train.compile is True and cfg.train.progress is False
    cfg = train_cli.resolve_config(_train_args(["--epochs", "3", "--set", "train.epochs=4"]))
    assert parsed == ["4"] and cfg.train.epochs == 4  # --set wins over the flag


def test_overrides_change_the_object_without_a_dict_round_trip(monkeypatch):
    cfg = apply_overrides(RunConfig(), ["model.residual=false"])

    def refuse(*args, **kwargs):
        raise AssertionError("a dict round trip")

    monkeypatch.setattr(RunConfig, "to_dict", refuse)
    monkeypatch.setattr(RunConfig, "from_dict", classmethod(refuse))
    new = apply_overrides(cfg, ["train.seed=3", "optimizer.lr=1"])
    assert new.train.seed == 3 and new.optimizer.lr == 1.0 and isinstance(new.optimizer.lr, float)
    assert new.model is cfg.model and new.data is cfg.data  # unchanged sections: the same objects
    assert new.model.config is cfg.model.config             # and the model is not parsed again
    changed = with_changes(cfg, {"model": {"segments": 4}})
    assert changed.model.overrides == {"residual": False, "segments": 4}
    with pytest.raises(ConfigError, match="train.epochs must be int"):
        with_changes(cfg, {"train": {"epochs": "3"}})  # typed values are checked, not parsed


def test_layers_stack_and_model_fields_merge():
    recipe = {"model": {"name": "xception_tiny", "overrides": {"dropout": 0.3}},
              "train": {"epochs": 14}}
    merged = merge_changes(recipe, {"model": {"residual": False}}, {"train": {"epochs": 2}})
    assert merged == {"model": {"name": "xception_tiny",
                                "overrides": {"dropout": 0.3, "residual": False}},
                      "train": {"epochs": 2}}
    file_layer = {"model": {"overrides": {"segments": 8}}}  # a file's overrides replace
    assert merge_changes(recipe, file_layer)["model"]["overrides"] == {"segments": 8}
    assert merge_changes({"optim": {"lr": 0.2}}) == {"optimizer": {"lr": 0.2}}
    with pytest.raises(ConfigError, match="train must be a mapping"):
        merge_changes({"train": 3})
    with pytest.raises(ConfigError, match="model.overrides must be a mapping"):
        merge_changes({"model": {"overrides": [1]}}, {"model": {"residual": False}})
    assert parse_assignments(["model.name=xception", "model.segments=4", "data.val_split=2012"]) \
        == {"model": {"name": "xception", "segments": 4}, "data": {"val_split": "2012"}}


def test_model_fields_cannot_collide_with_the_model_sections_keys():
    """``model.<key>``: ``name``/``overrides`` are the section's, anything else a model field."""
    own = {f for f in ModelSection.__dataclass_fields__}
    assert own == set(overrides_module.MODEL_KEYS)
    for name in list_models():
        assert not own & set(type(model_config(name)).__dataclass_fields__), name


def test_every_data_name_has_a_builder_and_sections_check_themselves():
    from xception.config import DataSection, TrainSection
    from xception.data.build import BUILDERS
    from xception.data.section import DATASETS

    assert tuple(BUILDERS) == DATASETS
    with pytest.raises(ConfigError, match="data.train_subset must be >= 0, got -1"):
        DataSection(train_subset=-1)  # made directly, for build_datasets: checked all the same
    with pytest.raises(ConfigError, match="train.ema_decay must be a finite number"):
        TrainSection(ema_decay=float("nan"))
