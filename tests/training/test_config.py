"""Run configs: overrides, the optim/optimizer alias, and rejection of bad input before any work."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli

from xception.cli.main import main
from xception.errors import ConfigError
from xception.training.config import RunConfig, apply_overrides


def test_defaults_round_trip():
    cfg = RunConfig()
    assert RunConfig.from_dict(json.loads(cfg.to_json())) == cfg
    assert cfg.optim is cfg.optimizer  # the old section name still reads


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
        (["--data", str(tmp_path / "nowhere")], "is not digits, cifar10"),
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
                     workers=None, compile=None, no_progress=True,
                     overrides=["schedule.decay_rate=0.5"])
    cfg = resolve_config(args)
    assert cfg.optimizer.lr == 0.2 and cfg.train.epochs == 3          # from the file
    assert cfg.optimizer.weight_decay == 1e-5 and cfg.train.ema       # from the recipe
    assert cfg.schedule.decay_rate == 0.5 and not cfg.train.progress  # --set and flags
