"""The `transfer` experiment (issue 27): pretraining as a stage run per seed, three ways of
learning the target classes from it, paired by seed; it refuses to run before its budgets are
chosen on the validation splits."""

from __future__ import annotations

import json

import pytest
from idx_helpers import write_set

from xception.errors import ConfigError
from xception.experiments import get_experiment, run
from xception.experiments import transfer as T
from xception.experiments.runner import base_config, keyed_config, run_key, variant_config


def test_it_refuses_to_run_before_its_budgets_are_chosen(tmp_path):
    with pytest.raises(ConfigError, match="budgets are not chosen yet.*transfer_pilot"):
        run("transfer", 1, ["train.threads=1"], tmp_path, log=lambda _: None)


@pytest.fixture
def tiny(monkeypatch, tmp_path):
    write_set(tmp_path / "fm", n_train=200, n_val=60)
    monkeypatch.setattr(T, "HOLDOUT", 10)
    monkeypatch.setattr(T, "SHOTS", (2, 0))
    monkeypatch.setattr(T, "PRETRAIN_EPOCHS", 1)
    monkeypatch.setattr(T, "EPOCHS", {2: 2, 0: 2})
    data = T._data

    def rooted(classes, shots):
        return {**data(classes, shots), "root": str(tmp_path / "fm")}

    monkeypatch.setattr(T, "_data", rooted)
    return tmp_path


def test_each_seed_pretrains_once_and_its_runs_start_from_that(tiny):
    out, logs = tiny / "transfer", []
    run("transfer", 2, ["train.threads=1", "train.batch_size=8"], out, log=logs.append)
    records = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert len(records) == 12 and all(r["test_top1"] is not None for r in records)
    for seed in (0, 1):
        assert (out / "stages" / "pretrain" / f"seed{seed}" / "model.safetensors").exists()
    assert sum("stage pretrain, seed" in line for line in logs) == 2  # trained once each
    for r in records:
        init = r["config"]["train"]["init"]
        if r["variant"].startswith("scratch"):
            assert init == ""
        else:
            assert init == str(out / "stages" / "pretrain" / f"seed{r['seed']}")
        assert r["config"]["data"]["classes"] == T.TARGET
    # the key names the pretraining run (its key), not the folder it lies in
    exp = get_experiment("transfer", "xception_small", {})
    base = base_config(["train.threads=1", "train.batch_size=8"])
    probe = next(v for v in exp.variants if v.name.startswith("linear probe"))
    stage = exp.stages[0]
    stage_key = run_key(variant_config(base, stage.overrides, 0, stage.settings))
    assert keyed_config(exp, base, probe, 0).train.init == f"@pretrain:{stage_key}"
    report = (out / "report.md").read_text()
    assert "fine-tune > scratch at 2 per class" in report and "Omnibus (two-way" in report
    logs.clear()
    run("transfer", 2, ["train.threads=1", "train.batch_size=8"], out, log=logs.append)
    assert not any("stage pretrain, seed" in line for line in logs)  # nothing trained again


def test_the_pilot_chooses_budgets_on_the_validation_splits_only(tiny, monkeypatch):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[2] / "benchmarks" / "transfer_pilot.py"
    spec = importlib.util.spec_from_file_location("transfer_pilot", path)
    pilot = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pilot)
    monkeypatch.setattr(pilot, "PRETRAIN_RUNGS", (1, 2))
    monkeypatch.setattr(pilot, "FIRST", {2: 1, 0: 1})
    monkeypatch.setattr(pilot, "RUNGS", 2)
    monkeypatch.setattr(pilot, "TOLERANCE", 2.0)  # everything "plateaus": the first rung
    out = tiny / "pilot"
    assert pilot.pretraining(out, []) == (1, True)
    assert pilot.target(out, pilot.read(out), 1, 2) == (1, True)
    records = pilot.read(out)
    assert len(records) == 2 + 2 * 3  # two pretraining rungs; two rungs of three methods
    assert not any("test" in key for r in records for row in r["history"] for key in row)
    probe = next(r for r in records if r.get("method") == "linear probe")
    assert probe["config"]["train"]["init"] == str(out / "pretrain" / "epochs1")
    assert pilot.target(out, records, 1, 2) == (1, True)  # resumed: nothing trained again
    assert len(pilot.read(out)) == len(records)
