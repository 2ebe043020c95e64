"""Every run record stands on its own (its settings, code, versions, machine), the run key
changes with the code's numerics version, and a report states each run's own environment and
can be re-rendered from the records without training."""

from __future__ import annotations

import json

import pytest

import xception.experiments.resumable as resumable
import xception.experiments.runner as runner
from xception import provenance
from xception.errors import ConfigError
from xception.experiments import run
from xception.experiments.report import environment_lines

TINY_RUN = ["data.name=digits", "train.epochs=1", "data.train_subset=32", "data.val_subset=32",
            "data.image_size=16", "train.threads=1", "model.stem_channels=[8,8]",
            "model.entry_channels=[8,8,8]", "model.middle_channels=8", "model.middle_repeats=1",
            "model.exit_channels=[8,8]", "model.final_channels=[8,8]"]


def test_the_environment_names_code_versions_and_machine():
    env = provenance.environment(threads=1)
    assert env["numerics"] == provenance.NUMERICS_VERSION and env["threads"] == 1
    assert set(env) == {"commit", "dirty", "numerics", "python", "torch", "numpy", "threads",
                        "machine", "cpu", "finished"}
    if env["commit"] is not None:  # a git checkout (the tests run from one)
        assert len(env["commit"]) == 40 and isinstance(env["dirty"], bool)
    # read once, at import: a long run records the code it loaded, not a later checkout's
    assert provenance.code_version() is provenance.code_version()


def test_records_carry_settings_and_environment_and_keys_follow_the_numerics(tmp_path, monkeypatch):
    out, logs = tmp_path / "residual", []
    run("residual", seeds=1, overrides=TINY_RUN, out_dir=out, log=lambda s: None)
    records = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    for record in records:
        assert record["config"]["data"]["name"] == "digits"
        assert record["config"]["train"]["epochs"] == 1 and record["config"]["train"]["seed"] == 0
        assert record["environment"]["numerics"] == provenance.NUMERICS_VERSION
        assert record["environment"]["torch"] and record["environment"]["cpu"] is not None
    # a change of the arithmetic: the same settings are another run, trained again
    class Trained(Exception):
        pass

    def train(*args, **kwargs):
        raise Trained

    monkeypatch.setattr(runner, "NUMERICS_VERSION", provenance.NUMERICS_VERSION + 1)
    monkeypatch.setattr(resumable, "fit", train)
    with pytest.raises(Trained):
        run("residual", seeds=1, overrides=TINY_RUN, out_dir=out, log=logs.append)
    assert not any("already done" in line for line in logs)


def test_report_only_renders_from_the_records_without_training(tmp_path, monkeypatch):
    out = tmp_path / "residual"
    run("residual", seeds=1, overrides=TINY_RUN, out_dir=out, log=lambda s: None)
    before = (out / "runs.jsonl").read_text()
    (out / "report.md").unlink()

    def refuse(*args, **kwargs):
        raise AssertionError("--report-only trained a run")

    monkeypatch.setattr(resumable, "fit", refuse)
    monkeypatch.setattr(runner, "NUMERICS_VERSION", 99)  # records of older code still render
    run("residual", seeds=1, overrides=TINY_RUN, out_dir=out, log=lambda s: None, report_only=True)
    report = (out / "report.md").read_text()
    assert "environment of 2 of 2 runs" in report and (out / "runs.jsonl").read_text() == before
    with pytest.raises(ConfigError, match=r"has no run of residual seed 1, no residual seed 1"):
        run("residual", seeds=2, overrides=TINY_RUN, out_dir=out, log=lambda s: None,
            report_only=True)


def test_a_report_states_each_runs_own_environment():
    env = provenance.environment(threads=1)
    records = [{"environment": env}, {"environment": {**env, "torch": "2.99.0"}}, {}]
    lines = environment_lines(records)
    assert len(lines) == 3
    assert f"torch {env['torch']}" in lines[0] and "torch 2.99.0" in lines[1]
    assert "not recorded" in lines[2] and all("of 3 runs" in line for line in lines)



def test_a_variant_can_change_the_model_and_other_settings():
    from xception.experiments import base_config
    from xception.experiments.runner import run_key, variant_config

    base = base_config(TINY_RUN)
    same = variant_config(base, {"residual": False}, 2)
    assert same.model.name == base.model.name and same.model.overrides["residual"] is False
    assert same.model.overrides["stem_channels"] == base.model.overrides["stem_channels"]
    other = variant_config(base, {"dropout": 0.1}, 2, {"model": {"name": "inception_v3"},
                                                       "data": {"train_subset": 16, "image_size": 80}})
    assert other.model.name == "inception_v3" and dict(other.model.overrides) == {"dropout": 0.1}
    assert other.data.train_subset == 16 and other.train.seed == 2
    assert run_key(variant_config(base, {}, 2, {"data": {"train_subset": 16}})) != \
        run_key(variant_config(base, {}, 2))
