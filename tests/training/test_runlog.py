"""The run log: metrics.jsonl/metrics.csv rows, log lines, nothing from a non-main rank, and the
optional TensorBoard event files with the per-epoch scalars."""

from __future__ import annotations

import csv
import json

import pytest
from conftest import TINY_RUN

from xception.config import RunConfig, apply_overrides
from xception.training.fit import fit
from xception.training.runlog import RunLog

ROWS = [{"epoch": 1, "train_loss": 1.25, "val_loss": 1.5, "val_top1": 0.5, "epoch_seconds": 2.0,
         "train_img_per_s": 100.0, "peak_mem_mb": 10.0},
        {"epoch": 2, "train_loss": 1.0, "val_loss": 1.25, "val_top1": 0.75, "epoch_seconds": 2.0,
         "train_img_per_s": 100.0, "peak_mem_mb": 10.0, "ema_val_top1": 0.625}]


def _log(tmp_path, active: bool = True, **kw) -> tuple[RunLog, list[str]]:
    lines: list[str] = []
    settings = {"progress": False, "log_every": 1, "tensorboard": False} | kw
    return RunLog(tmp_path, lines.append, active, title="t", **settings), lines


def test_each_epoch_rewrites_the_metrics_files_whole(tmp_path):
    rl, lines = _log(tmp_path)
    history: list[dict] = []
    for row in ROWS:
        history.append(row)
        rl.epoch_row(row, history)
        assert [json.loads(r) for r in (tmp_path / "metrics.jsonl").read_text().splitlines()] \
            == history
    with open(tmp_path / "metrics.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == [*ROWS[0], "ema_val_top1"]  # a key that appears later is a column
    assert [r["val_top1"] for r in table] == ["0.5", "0.75"]
    assert table[0]["ema_val_top1"] == "" and table[1]["ema_val_top1"] == "0.625"
    assert "val top-1 75.00%" in lines[1] and "EMA top-1 62.50%" in lines[1]
    assert "EMA" not in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv", "metrics.jsonl"]


def test_a_non_main_rank_writes_and_logs_nothing(tmp_path):
    rl, lines = _log(tmp_path, active=False, progress=True)
    rl("hello")
    rl.bad_images([("a.png", "truncated")])
    rl.start_epoch(1, 2, 4, 0)
    rl.step(1, 1, 4, 1, 8, 0.5, 0.1)
    rl.end_epoch()
    rl.epoch_row(ROWS[0], ROWS[:1])
    rl.write_metrics(ROWS, curves=True)
    rl.close()
    assert lines == [] and list(tmp_path.iterdir()) == []


def test_step_lines_every_log_every_steps_and_the_first_bad_images(tmp_path):
    rl, lines = _log(tmp_path, progress=True, log_every=2)  # not a terminal: plain lines
    rl.start_epoch(1, 1, 4, 0)
    for step in range(1, 5):
        rl.step(1, step, 4, step, 8, 0.5, 0.1)
    assert [ln.split("  ")[0] for ln in lines] == ["epoch 1 step 2/4", "epoch 1 step 4/4"]
    lines.clear()
    rl.bad_images([(f"{i}.png", "truncated") for i in range(8)])
    rl.bad_images([(f"{i}.png", "truncated") for i in range(8, 16)])
    assert len(lines) == 10 and lines[-1] == "warning: skipped unreadable image 9.png (truncated)"


def test_tensorboard_scalars_match_the_metrics(tmp_path):
    event_accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator")
    cfg = apply_overrides(RunConfig(), [*TINY_RUN, "data.train_subset=32", "data.val_subset=20",
                                        "train.batch_size=16", "train.epochs=2",
                                        "train.tensorboard=true"])
    result = fit(cfg, tmp_path / "run", log=lambda s: None)
    acc = event_accumulator.EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    acc.Reload()
    scalars = acc.Tags()["scalars"]
    assert "epoch/val_top1" in scalars and "epoch/train_loss" in scalars
    val = [e.value for e in acc.Scalars("epoch/val_top1")]
    assert val == pytest.approx([h["val_top1"] for h in result.history])
