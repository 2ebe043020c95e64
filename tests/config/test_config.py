"""Run configs: typed overrides, the optim/optimizer alias, JSON round trips, one validation when a
config is made (model section parsed, batch split, image size), and rejection before any work."""

from __future__ import annotations

import copy
import json

import pytest
from conftest import run_cli

from xception.cli.main import main
from xception.config import RunConfig, apply_overrides, fit_to_data
from xception.errors import ConfigError


def test_defaults_round_trip():
    cfg = RunConfig()
    assert RunConfig.from_dict(json.loads(cfg.to_json())) == cfg


def test_optimizer_and_optim_are_one_section():
    a = apply_overrides(RunConfig(), ["optimizer.lr=0.3"])
    b = apply_overrides(RunConfig(), ["optim.lr=0.3"])
    assert a == b and a.optimizer.lr == 0.3
    old = RunConfig().to_dict()
    old["optim"] = old.pop("optimizer")
    assert RunConfig.from_dict(old) == RunConfig()
    both = RunConfig().to_dict() | {"optim": {}}
    with pytest.raises(ConfigError, match="both"):
        RunConfig.from_dict(both)


def test_model_overrides_and_text_fields():
    cfg = apply_overrides(RunConfig(), ["model.residual=false", "data.val_split=2012",
                                        "train.device=cpu"])
    assert cfg.model.overrides == {"residual": False}
    assert cfg.data.val_split == "2012" and cfg.train.device == "cpu"


@pytest.mark.parametrize("item, message", [
    ("optimizer.lrr=1", "valid: .*optimizer.lr'"),
    ("optimiser.lr=1", "unknown section"),
    ("optimizer.name=adam", r"choose one of \['sgd', 'adamw', 'rmsprop'\]"),
    ("schedule.decay_unit=days", "epochs', 'samples', 'steps"),
    ("data.name=imagenet", "cifar10"),
    ("train.precision=fp8", "bf16"),
    ("optimizer.lr=-0.1", "optimizer.lr must be > 0"),
    ("train.batch_size=0", "train.batch_size must be >= 1"),
    ("train.epochs=two", "train.epochs must be int"),
    ("data.crop_fraction=1.5", r"in \(0, 1\]"),
    ("train.ema_decay=1.0", r"in \[0, 1\)"),
    ("lr=3", "section.key=value"),
])
def test_bad_overrides_name_the_problem(item, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(RunConfig(), [item])


def test_combinations_are_checked():
    with pytest.raises(ConfigError, match="divisible"):
        apply_overrides(RunConfig(), ["train.batch_size=10", "train.accum_steps=4"])


def test_cli_rejects_bad_settings_before_any_work(tmp_path, capsys):
    # the real entry point once, as a process ...
    proc = run_cli("train", "--set", "optimizer.momentum=2", "--out", str(tmp_path / "run"))
    assert proc.returncode == 2
    assert "optimizer.momentum must be in [0, 1)" in proc.stderr
    assert not (tmp_path / "run").exists()
    # ... and the same code in this process for the other cases
    for args, message in [
        (["--recipe", "paper-imagenet", "--set", "train.optimizer=sgd"],
         "unknown key 'train.optimizer'"),
        (["--data", str(tmp_path / "nowhere")], "is not digits, fashion-mnist, mnist, cifar10"),
        (["--recipe", "paper-imagenet"], "needs data.root (or --data PATH)"),
        (["--resume", str(tmp_path / "nothing")], "does not exist"),
    ]:
        assert main(["train", *args, "--out", str(tmp_path / "run2")]) == 2
        assert message in capsys.readouterr().err, args
        assert not (tmp_path / "run2").exists()


def test_cli_config_file_merges_over_recipe(tmp_path):
    from argparse import Namespace

    from xception.cli.train import resolve_config

    f = tmp_path / "cfg.json"
    f.write_text(json.dumps({"optim": {"lr": 0.2}, "train": {"epochs": 3}}))
    args = Namespace(resume=None, recipe="paper-imagenet", config=str(f), data=None, model=None,
                     epochs=None, batch_size=None, lr=None, seed=None, device=None, precision=None,
                     workers=None, compile=None, no_progress=True, init=None,
                     overrides=["schedule.decay_rate=0.5"])
    cfg = resolve_config(args)
    assert cfg.optimizer.lr == 0.2 and cfg.train.epochs == 3          # from the file
    assert cfg.optimizer.weight_decay == 1e-5 and cfg.train.ema       # from the recipe
    assert cfg.schedule.decay_rate == 0.5 and not cfg.train.progress  # --set and flags


def test_overrides_are_typed_and_routed():
    cfg = apply_overrides(RunConfig(), ["optimizer.lr=0.3", "train.epochs=2", "data.augment=false",
                                       "model.residual=false", "model.entry_channels=[8,16,32]",
                                       "model.name=xception", "data.image_size=71"])
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


@pytest.mark.parametrize(("sets", "message"), [
    (["model.segments=3"], "segments=3 must divide the channels"),
    (["model.name=xception"], r"data.image_size=32: input 32x32 is smaller than xception's minimum of 71x71"),
    (["model.widht=3"], r"'xception_small' has no setting\(s\) \['widht'\]"),
    (["model.name=resnet"], "unknown model 'resnet'"),
])
def test_model_section_is_parsed_with_the_run_config(sets, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(RunConfig(), sets)


def test_parsed_model_config_and_data_counts():
    cfg = apply_overrides(RunConfig(), ["model.segments=4", "model.entry_channels=[32,64,128]"])
    mc = cfg.model.config
    assert mc.segments == 4 and mc.entry_channels == (32, 64, 128)
    assert fit_to_data(cfg, 10, 3, False) is mc          # nothing to change: the same object
    assert fit_to_data(cfg, 7, 1, False).num_classes == 7
    fixed = apply_overrides(RunConfig(), ["model.num_classes=5"])
    with pytest.raises(ConfigError, match=r"model.num_classes=5 but the data \(digits\) has 10 "
                       "classes; leave model.num_classes unset"):
        fit_to_data(fixed, 10, 3, False)                # the run's own setting is not overridden
    assert fit_to_data(fixed, 5, 3, False).num_classes == 5
    smooth = apply_overrides(RunConfig(), ["optimizer.label_smoothing=0.1"])
    assert fit_to_data(smooth, 10, 3, False) is smooth.model.config
    with pytest.raises(ConfigError, match="label_smoothing applies to single-label data only"):
        fit_to_data(smooth, 10, 3, True)


def test_batch_split_over_processes_is_checked_at_parse_time(monkeypatch):
    apply_overrides(RunConfig(), ["train.batch_size=6"])  # one process: fine
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(ConfigError, match=r"train.batch_size=6 \(global\) must be divisible by 4 "
                       r"process\(es\) x train.accum_steps=1"):
        apply_overrides(RunConfig(), ["train.batch_size=6"])


def test_configs_cannot_change_after_validation():
    import dataclasses

    cfg = apply_overrides(RunConfig(), ["model.residual=false"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.batch_size = 7  # would skip the divisibility check
    with pytest.raises(TypeError, match="cannot be changed"):
        cfg.model.overrides["segments"] = 3  # would leave cfg.model.config stale
    assert copy.deepcopy(cfg) == cfg
    assert json.loads(cfg.to_json())["model"]["overrides"] == {"residual": False}
    assert dataclasses.replace(cfg.train, seed=4).seed == 4
    with pytest.raises(ConfigError, match="divisible"):
        dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, accum_steps=3))


def test_refused_model_settings_write_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--model", "xception", "--out", str(out)]) == 2
    assert "smaller than xception's minimum of 71x71" in capsys.readouterr().err
    assert main(["train", "--set", "model.segments=5", "--out", str(out)]) == 2
    assert "segments=5 must divide" in capsys.readouterr().err
    assert not out.exists()
