"""A run killed mid-way is continued by the next process from its last epoch, to the same numbers."""

import json

import pytest

import xception.experiments.resumable as resumable
from xception.experiments import run
from xception.experiments.resumable import PARTIAL
from xception.training.fit import _Run

TINY_RUN = ["data.name=digits", "train.epochs=1", "data.train_subset=32", "data.val_subset=32",
            "data.image_size=16", "train.threads=1", "model.stem_channels=[8,8]",
            "model.entry_channels=[8,8,8]", "model.middle_channels=8", "model.middle_repeats=1",
            "model.exit_channels=[8,8]", "model.final_channels=[8,8]"]
RUN = [s for s in TINY_RUN if not s.startswith("train.epochs")] + ["train.epochs=3"]


class Killed(BaseException):
    """What a SIGKILL leaves: the process gone after its checkpoint, nothing recorded."""


def records(out):
    return [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]


def test_a_killed_run_resumes_from_its_last_epoch_to_the_uninterrupted_result(tmp_path,
                                                                               monkeypatch):
    real_end, real_fit, ends = _Run._end_epoch, resumable.fit, []

    def end_epoch_then_die(self, *args):
        real_end(self, *args)  # the epoch's checkpoint is written here
        ends.append(1)
        if len(ends) == 2:
            raise Killed

    out = tmp_path / "killed" / "residual"
    monkeypatch.setattr(_Run, "_end_epoch", end_epoch_then_die)
    with pytest.raises(Killed):
        run("residual", seeds=1, overrides=RUN, out_dir=out, log=lambda s: None)
    assert not (out / "runs.jsonl").exists() or not records(out)
    assert len(list((out / PARTIAL).iterdir())) == 1  # the killed run's folder, checkpointed

    ends.clear()
    monkeypatch.setattr(_Run, "_end_epoch",
                        lambda self, *a: (ends.append(1), real_end(self, *a)))
    logs: list[str] = []
    run("residual", seeds=1, overrides=RUN, out_dir=out, log=logs.append)
    assert sum("resumed after epoch 2" in line for line in logs) == 1
    assert len(ends) == 1 + 3  # the killed run's last epoch, then the other variant's three
    assert not list((out / PARTIAL).iterdir())  # recorded runs leave no folder behind

    monkeypatch.setattr(_Run, "_end_epoch", real_end)
    # uninterrupted and without a folder, as runs were trained before they were checkpointed
    monkeypatch.setattr(resumable, "fit", lambda cfg, folder, log, resume: real_fit(cfg, None, log))
    whole = tmp_path / "whole" / "residual"
    run("residual", seeds=1, overrides=RUN, out_dir=whole, log=lambda s: None, reuse=False)
    resumed, uninterrupted = records(out), records(whole)
    assert [r["key"] for r in resumed] == [r["key"] for r in uninterrupted]
    for a, b in zip(resumed, uninterrupted, strict=True):
        assert a["history"] == b["history"]  # every loss and accuracy, exactly
        assert a["test_top1"] == b["test_top1"] and a["final_top1"] == b["final_top1"]


def test_a_start_killed_before_its_first_checkpoint_starts_again(tmp_path):
    out = tmp_path / "residual"
    run("residual", seeds=1, overrides=TINY_RUN, out_dir=out, log=lambda s: None)
    key = records(out)[0]["key"]
    # what a start killed during its first epoch leaves: a folder without a checkpoint
    (out / "runs.jsonl").write_text("")
    stale = out / PARTIAL / key
    stale.mkdir(parents=True)
    (stale / "config.json").write_text("{}")
    logs: list[str] = []
    run("residual", seeds=1, overrides=TINY_RUN, out_dir=out, log=logs.append)
    assert not any("resumed" in line for line in logs)
    assert [r["key"] for r in records(out)][0] == key and not stale.exists()
