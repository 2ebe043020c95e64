"""Fine-tuning (issue 27): start from weights (`train.init`), freeze stages and BatchNorm, a head
learning-rate multiplier, and two phases in one resumable run (`--recipe finetune`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY_RUN, cli_env, run_cli
from safetensors.torch import load_file
from torch.nn.modules.batchnorm import _BatchNorm

import xception
from xception.config import RunConfig, apply_overrides
from xception.errors import ConfigError, WeightsError
from xception.training import fit
from xception.training.checkpoint import CHECKPOINT
from xception.training.freezing import freeze, is_inference_bn
from xception.training.optimizers import build_optimizer
from xception.training.recipes import get_recipe

SMALL = [*TINY_RUN, "data.train_subset=48", "data.val_subset=16", "train.batch_size=8"]


def _cfg(*sets: str) -> RunConfig:
    return apply_overrides(RunConfig(), [*SMALL, *sets])


def _tiny_model(**kw) -> torch.nn.Module:
    cfg = _cfg().model
    return xception.create_model(cfg.name, **{"num_classes": 10, "in_chans": 1, **cfg.overrides, **kw})


def _pretrained(tmp_path: Path, classes: list[str] | None = None, in_chans: int = 1,
                num_classes: int = 10) -> tuple[Path, dict[str, torch.Tensor]]:
    """A project weights file of the tiny model with trained-looking (random) weights and BN
    statistics, and its tensors."""
    torch.manual_seed(1)
    model = _tiny_model(in_chans=in_chans, num_classes=num_classes)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, _BatchNorm):
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2)
                module.weight.uniform_(0.5, 1.5)
    path = tmp_path / "pre.safetensors"
    xception.save_weights(model, path, class_names=classes or [f"c{i}" for i in range(num_classes)],
                          preprocess={"image_size": 16, "in_chans": in_chans})
    return path, {k: v.clone() for k, v in model.state_dict().items()}


def test_backbone_frozen_with_bn_in_inference_mode_stays_bit_identical(tmp_path):
    path, before = _pretrained(tmp_path)
    logs: list[str] = []
    result = fit(_cfg(f"train.init={path}", "train.freeze=backbone", "train.freeze_bn=true",
                      "train.epochs=2", "train.bn_recalibration=2"), tmp_path / "run",
                 log=logs.append)
    after = load_file(tmp_path / "run" / "model.safetensors")
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    # only the new classifier trained (it started new: the digits' class names are not c0..c9)
    assert changed and all(k.startswith("head.classifier.") for k in changed)
    assert any(line.startswith("initialised from") and "new: head.classifier (weight, bias)" in line
               for line in logs)
    assert any("frozen: stem, entry_flow, middle_flow, exit_flow" in line for line in logs)
    assert all(is_inference_bn(m) for m in result.model.modules() if isinstance(m, _BatchNorm))


def test_frozen_parameters_have_no_optimizer_state_and_no_gradient():
    model = _tiny_model()
    report = freeze(model, "stem,entry_flow")
    assert report.stages == ("stem", "entry_flow")
    optimizer = build_optimizer(model, _cfg().optimizer)
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    for name, parameter in model.named_parameters():
        frozen = name.split(".")[0] in ("stem", "entry_flow")
        assert parameter.requires_grad is not frozen
        assert (id(parameter) in in_optimizer) is not frozen
    model.train()
    # the frozen stages' BatchNorm layers stay in inference mode after model.train()
    bn_of = {name: [m.training for m in stage.modules() if isinstance(m, _BatchNorm)]
             for name, stage in model.named_children()}
    assert not any(bn_of["stem"] + bn_of["entry_flow"]) and all(bn_of["middle_flow"])
    with pytest.raises(ConfigError, match="nope is not a stage of Xception.*list of stem, entry_flow"):
        freeze(model, "stem,nope")
    freeze(model, "none")  # undone: everything trains, BatchNorm back in training mode
    model.train()
    assert all(p.requires_grad for p in model.parameters())
    assert not any(is_inference_bn(m) for m in model.modules())


def test_the_head_learning_rate_multiplier_makes_its_own_groups():
    model = _tiny_model()
    groups = build_optimizer(model, _cfg("optimizer.head_lr_scale=10").optimizer).param_groups
    head = {id(p) for p in model.head.parameters()}
    for group in groups:
        in_head = {id(p) in head for p in group["params"]}
        assert len(in_head) == 1
        assert group["lr"] == pytest.approx(0.1 * (10 if in_head == {True} else 1))


def test_weights_of_the_same_classes_keep_their_classifier(tmp_path):
    digits = [str(i) for i in range(10)]
    path, before = _pretrained(tmp_path, classes=digits)
    model = _tiny_model()
    from xception.training.pretrained import load_pretrained, read_init

    report = load_pretrained(model, read_init(str(path)), digits)
    assert report.new == () and report.loaded == report.total
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_three_channel_weights_on_one_channel_data_sum_the_stem(tmp_path):
    path, before = _pretrained(tmp_path, in_chans=3)
    logs: list[str] = []
    fit(_cfg(f"train.init={path}", "train.freeze=backbone", "train.freeze_bn=true",
             "train.epochs=1"), tmp_path / "run", log=logs.append)
    after = load_file(tmp_path / "run" / "model.safetensors")
    key = next(k for k, v in before.items() if v.dim() == 4)
    assert torch.allclose(after[key], before[key].sum(dim=1, keepdim=True))
    assert any("3-channel filters adapted to 1 input channel(s)" in line for line in logs)


def test_weights_of_another_width_fail_before_anything_is_written(tmp_path):
    path, _ = _pretrained(tmp_path)
    out = tmp_path / "run"
    proc = run_cli("train", "--init", str(path), "--out", str(out),
                   *[a for s in [*SMALL, "model.middle_channels=16"] for a in ("--set", s)])
    assert proc.returncode == 2
    assert "does not fit the run's model" in proc.stderr and "middle_flow" in proc.stderr
    assert "another architecture or width" in proc.stderr
    assert not out.exists()


def test_a_keras_file_fine_tunes_a_new_head_with_everything_else_bit_identical(tmp_path,
                                                                               image_folder):
    os.environ["KERAS_BACKEND"] = "torch"  # as the Keras parity tests: before keras is imported
    keras = pytest.importorskip("keras")
    base = keras.applications.Xception(weights=None, include_top=False,
                                       input_shape=(None, None, 3), pooling=None)
    h5 = tmp_path / "notop.weights.h5"
    base.save_weights(h5)
    out = tmp_path / "run"
    run_cli("train", "--init", str(h5), "--model", "xception", "--data", str(image_folder),
            "--epochs", "1", "--batch-size", "4", "--out", str(out), "--no-progress",
            "--set", "train.freeze=backbone", "--set", "train.freeze_bn=true",
            "--set", "data.image_size=71", "--set", "train.threads=1", check=True)
    theirs, _ = xception.load_model(h5)
    expected = theirs.state_dict()
    got = load_file(out / "model.safetensors")
    for key, value in expected.items():
        if not key.startswith("head."):
            assert torch.equal(got[key], value), key  # frozen tensors and every BN buffer
    assert got["head.classifier.weight"].shape == (3, 2048)
    meta = xception.load_model(out)[1]
    assert meta["class_names"] == ["ant", "bee", "cat"]
    model = RunConfig.load(out / "config.json").model.config
    assert (model.padding, model.stem_padding, model.bn_eps) == ("tf_same", "valid", 1e-3)


def test_the_weights_numerics_become_the_runs_model_settings(tmp_path):
    """timm's legacy port pads symmetrically with BatchNorm eps 1e-5: a run from it must
    compute what timm computes, and say so in its config (a resume rebuilds the same model)."""
    from xception.training.pretrained import with_source_numerics
    from xception.weights.load import Source

    src = Source(tmp_path / "x.pth", "timm_legacy", "timm legacy Xception")
    cfg = with_source_numerics(_cfg(), src)
    assert cfg.model.overrides["padding"] == "symmetric" and cfg.model.config.bn_eps == 1e-5
    assert cfg.model.overrides["stem_padding"] == "valid"
    mine = with_source_numerics(_cfg("model.bn_eps=0.01"), src)  # what the run set stays
    assert mine.model.config.bn_eps == 0.01


FINETUNE = [*SMALL, "data.train_subset=160", "train.epochs=3", "train.freeze=backbone",
            "train.freeze_bn=true", "train.unfreeze_epoch=2", "optimizer.name=adamw",
            "optimizer.lr=0.001", "optimizer.weight_decay=0", "train.checkpoint_every=3",
            "schedule.name=constant", "schedule.warmup_fraction=0"]


def test_two_phases_unfreeze_at_their_epoch(tmp_path):
    path, before = _pretrained(tmp_path)
    logs: list[str] = []
    fit(_cfg(*FINETUNE, f"train.init={path}"), tmp_path / "run", log=logs.append)
    assert sum("phase 2 of fine-tuning" in line for line in logs) == 1
    state = torch.load(tmp_path / "run" / CHECKPOINT, weights_only=True)
    assert state["phase"] == 2
    lrs = [group["lr"] for group in state["optimizer"]["param_groups"]]
    assert lrs == pytest.approx([1e-5] * len(lrs))
    after = load_file(tmp_path / "run" / "model.safetensors")
    backbone = [k for k in before if not k.startswith("head.") and "running" not in k
                and "num_batches" not in k and before[k].dim() > 1]
    assert any(not torch.equal(before[k], after[k]) for k in backbone)  # phase 2 trained them
    bn = [k for k in before if "running_" in k]
    assert all(torch.equal(before[k], after[k]) for k in bn)  # BatchNorm kept its statistics


def test_sigterm_in_phase_two_resumes_in_phase_two_bitwise(tmp_path):
    path, _ = _pretrained(tmp_path)
    sets = [a for s in [*FINETUNE, f"train.init={path}"] for a in ("--set", s)]
    reference = tmp_path / "reference"
    run_cli("train", "--out", str(reference), *sets, check=True)
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "xception", "train", "--out", str(out), *sets],
                            env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 240
    while True:  # a checkpoint in phase 2 (epoch 2 or 3), then stop the run
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        if (out / CHECKPOINT).exists():
            try:  # the checkpoint may be being replaced right now
                state = torch.load(out / CHECKPOINT, weights_only=True)
            except (RuntimeError, EOFError, FileNotFoundError):
                state = {}
            if state.get("phase") == 2:
                break
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    assert not (out / "model.safetensors").exists()
    resumed = run_cli("train", "--resume", str(out), check=True)
    assert "phase 2 of fine-tuning" not in resumed.stdout  # it was already in phase 2
    a, b = load_file(reference / "model.safetensors"), load_file(out / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_finetune_recipe_is_the_guides_two_phases():
    cfg = get_recipe("finetune")
    assert (cfg.train.freeze, cfg.train.freeze_bn, cfg.train.unfreeze_epoch) == ("backbone", True, 21)
    assert cfg.optimizer.name == "adamw" and cfg.optimizer.lr == 1e-3
    assert cfg.optimizer.lr * cfg.train.unfreeze_lr_scale == pytest.approx(1e-5)
    with pytest.raises(ConfigError, match="nothing is frozen"):
        apply_overrides(RunConfig(), ["train.unfreeze_epoch=2"])
    with pytest.raises(ConfigError, match="after the last epoch"):
        apply_overrides(RunConfig(), ["train.unfreeze_epoch=9", "train.freeze=backbone"])


def test_init_is_not_a_pickle_and_names_the_file(tmp_path):
    bad = tmp_path / "evil.pth"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(WeightsError):
        fit(_cfg(f"train.init={bad}"), tmp_path / "run", log=lambda _: None)
    assert not (tmp_path / "run").exists()
