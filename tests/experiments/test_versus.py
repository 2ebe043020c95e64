"""The `versus` experiment (issue 26): Xception vs Inception V3 at equal parameters over three
training-set sizes. Its networks and budget are the pilot's, runs can be shared between
processes, and the report tests the gap per size, its trend and the two-way omnibus."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from idx_helpers import write_set

from xception.config import RunConfig, apply_overrides
from xception.errors import ConfigError
from xception.experiments import base_config, get_experiment, run
from xception.experiments import versus as V
from xception.experiments.claims import claim, release
from xception.experiments.runner import identity_dict, run_key, variant_config
from xception.models.registry import build_model, model_config

ROOT = Path(__file__).parents[2]
PILOT = ROOT / "benchmarks" / "results" / "cpu" / "versus_pilot"


def _pilot_script():
    spec = importlib.util.spec_from_file_location("versus_pilot",
                                                  ROOT / "benchmarks" / "versus_pilot.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _network(side: str) -> torch.nn.Module:
    cfg = apply_overrides(RunConfig(), V.model_settings(side)).model
    return build_model(model_config(cfg.name, num_classes=10, in_chans=1, **cfg.overrides))


def test_the_two_networks_have_equal_parameters_and_the_same_downsampling():
    xception, inception = _network("xception"), _network("inception")
    counts = [sum(p.numel() for p in net.parameters()) for net in (xception, inception)]
    assert max(counts) / min(counts) - 1 < 0.03
    shapes: dict[str, tuple[int, ...]] = {}
    for net in (xception, inception):
        for name, module in net.named_children():
            module.register_forward_hook(
                lambda m, i, out, name=name: shapes.__setitem__(name, tuple(out.shape[-2:])))
        net.eval()
        net(torch.randn(1, 1, 28, 28))
    # the paper's middle flow (Xception) and 17x17 group (Inception) on maps of >= 7x7 ...
    assert shapes["middle_flow"] == (7, 7) and shapes["Mixed_6e"][0] >= 7
    # ... and both end on the same 4x4 maps before the same head
    assert shapes["exit_flow"] == shapes["Mixed_7c"] == (4, 4)
    assert type(xception.head) is type(inception.head)


def test_variants_are_the_sizes_and_the_tests_are_declared():
    exp = get_experiment("versus", "xception_small", {})
    assert [v.name for v in exp.variants] == [
        f"{model}, {size:,} images" for size in V.SIZES for model in ("Xception", "Inception V3")]
    primary = [t for t in exp.tests if t.primary]
    assert [t.metric for t in primary] == ["test_top1"] * 4  # the test split decides
    trend = primary[-1]
    assert trend.levels == (0.0, 2.0, 4.0) and trend.b == tuple(b for _, b in exp.pairs)
    assert all("validation split" in t.label for t in exp.tests if not t.primary)
    lines = "\n".join(exp.declarations)
    assert "5,000 of the 60,000 training images held out" in lines and "80 epochs" in lines


def test_seed_0_is_the_pilots_configuration_and_the_budgets_are_the_pilots_choice():
    """The experiment's seed-0 runs are the pilot's (so its Inception rungs at 4E come from
    them), and EPOCHS is what the pilot's declared rule chose from its committed runs."""
    pilot = _pilot_script()
    records = pilot.read(PILOT)
    assert pilot.chosen(records) == V.EPOCHS
    exp = get_experiment("versus", "xception_small", {})
    base = base_config(["train.threads=1"])
    compared = 0
    for variant in exp.variants:
        # settings added since (at their neutral defaults) are not part of a run's identity
        cfg = identity_dict(variant_config(base, variant.overrides, 0, variant.settings))
        for record in records:
            if (record["config"]["model"]["name"] == cfg["model"]["name"]
                    and record["size"] == cfg["data"]["train_subset"]
                    and record["epochs"] == cfg["train"]["epochs"]):
                assert record["config"] == cfg
                compared += 1
    assert compared == 4  # Xception at every size, Inception V3 at 3,438 (the 4E runs made)


@pytest.mark.parametrize("sets,clash", [(["data.train_subset=100"], "data.train_subset"),
                                        (["train.epochs=3"], "train.epochs"),
                                        (["model.dropout=0.3"], "model.dropout"),
                                        (["data.name=digits"], "data.name")])
def test_settings_the_experiment_fixes_cannot_be_overridden(tmp_path, sets, clash):
    with pytest.raises(ConfigError, match=f"versus sets {clash} itself"):
        run("versus", 1, sets, tmp_path, log=lambda _: None)


def test_a_claim_is_exclusive_while_its_process_lives(tmp_path):
    assert claim(tmp_path, "k") is None and claim(tmp_path, "k") is None  # ours, again
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "held").write_text(json.dumps({"host": os.uname().nodename,
                                                   "pid": other.pid}))
        assert claim(tmp_path, "held") == f"{os.uname().nodename} pid {other.pid}"
    finally:
        other.kill()
        other.wait()
    assert claim(tmp_path, "held") is None  # its process died: taken over
    release(tmp_path, "held")
    assert not (tmp_path / "held").exists()


def _tiny(monkeypatch, tmp_path):
    """The experiment on idx files written here: 2 sizes, a short budget, a small batch."""
    write_set(tmp_path / "fm", n_train=130, n_val=30)
    monkeypatch.setattr(V, "SIZES", (20, 80))
    monkeypatch.setattr(V, "EPOCHS", {20: (2, False), 80: (1, True)})
    monkeypatch.setattr(V, "HOLDOUT", 30)
    monkeypatch.setattr(V, "BUDGET", [
        *(s for s in V.BUDGET if not s.startswith("data.val_holdout")), "data.val_holdout=30",
        f"data.root={tmp_path / 'fm'}", "train.batch_size=16", "train.bn_recalibration=1"])


def test_two_processes_share_the_runs_and_the_last_writes_the_report(monkeypatch, tmp_path):
    _tiny(monkeypatch, tmp_path)
    out, logs = tmp_path / "versus", []
    exp = get_experiment("versus", "xception_small", {})
    base = base_config(["train.threads=1"])
    held = exp.variants[3]  # Inception V3 at 80 images, seed 1: "another process" trains it
    key = run_key(variant_config(base, held.overrides, 1, held.settings))
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        (out / "claims").mkdir(parents=True)
        (out / "claims" / key).write_text(json.dumps({"host": os.uname().nodename,
                                                      "pid": other.pid}))
        run("versus", 2, ["train.threads=1"], out, log=logs.append)
    finally:
        other.kill()
        other.wait()
    assert any("being trained by another process" in line for line in logs)
    assert not (out / "report.md").exists()  # one run missing: no report yet
    assert len((out / "runs.jsonl").read_text().splitlines()) == 7
    logs.clear()
    run("versus", 2, ["train.threads=1"], out, log=logs.append)  # its process died: trained
    assert [line.split(":")[0] for line in logs if ": final val top-1" in line] == [
        "[8/8] Inception V3, 80 images, seed 1"]
    records = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert len(records) == 8 and all(r["test_top1"] is not None for r in records)
    assert {r["config"]["data"]["train_subset"] for r in records} == {20, 80}
    report = (out / "report.md").read_text()
    assert "Xception > Inception V3 at 80 images" in report
    assert "Omnibus (two-way" in report and "interaction" in report
    assert "test top-1 (%)" in (out / "results.md").read_text()
    speed = json.loads((out / "speed.json").read_text())
    assert set(speed["img_per_s"]) == {"Xception", "Inception V3"}
    assert all(rate > 0 for rate in speed["img_per_s"].values())
    assert "Training speed, side by side (CPU)" in report
    assert "differs between the variants: data.train_subset = 20 / 80" in report
    assert "30 images held out of the training images" in report
    assert (out / "benefit.png").exists() and not list((out / "claims").iterdir())



def test_settings_added_later_keep_the_recorded_runs_keys():
    """A setting added after runs were recorded (fine-tuning's) is left out of a run's key at
    its neutral default, so the recorded runs are still found; set, it changes the key."""
    from xception.config.loader import flatten
    from xception.experiments.runner import NEUTRAL

    defaults = flatten(RunConfig())
    assert all(defaults[key] == value for key, value in NEUTRAL.items())
    base = apply_overrides(RunConfig(), ["train.epochs=2"])
    changed = apply_overrides(base, ["train.freeze=backbone"])
    assert run_key(base) != run_key(changed)
    assert "freeze" not in json.dumps(identity_dict(base))
