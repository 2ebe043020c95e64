"""`xception train ... --out DIR --resume auto`: one command that can simply be run again (torchrun
--max-restarts, a requeued job): it starts DIR's run, or continues it from its checkpoint."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import torch
from conftest import TINY_RUN, cli_env, run_cli, wait_for_checkpoint
from safetensors.torch import load_file

RUN = [*TINY_RUN, "data.train_subset=160", "data.val_subset=20", "train.batch_size=8",
       "train.epochs=3", "train.checkpoint_every=3", "model.dropout=0.3"]
SETS = [a for s in RUN for a in ("--set", s)]


def _command(out: Path) -> list[str]:
    return [sys.executable, "-m", "xception", "train", "--out", str(out), "--resume", "auto",
            *SETS]


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def test_killed_then_the_same_command_continues_bitwise(tmp_path):
    reference = tmp_path / "reference"
    first = subprocess.run(_command(reference), env=cli_env(), capture_output=True, text=True,
                           timeout=300)
    assert first.returncode == 0, first.stderr  # an absent folder: a fresh start
    assert "continuing" not in first.stdout
    out = tmp_path / "run"
    proc = subprocess.Popen(_command(out), env=cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    wait_for_checkpoint(proc, out)
    proc.send_signal(signal.SIGKILL)  # a lost node: nothing is saved on the way out
    proc.communicate(timeout=60)
    assert not (out / "model.safetensors").exists()
    again = subprocess.run(_command(out), env=cli_env(), capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stderr
    assert "holds a checkpoint; continuing it" in again.stdout
    a, b = _weights(reference), _weights(out)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_start_killed_before_its_first_checkpoint_starts_again(tmp_path):
    reference = tmp_path / "reference"
    run_cli("train", "--out", str(reference), *SETS, check=True)
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text((reference / "config.json").read_text())
    (out / "metrics.jsonl").write_text("")
    proc = subprocess.run(_command(out), env=cli_env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "stopped before its first checkpoint; starting again" in proc.stdout
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3


def test_another_runs_folder_is_refused_and_out_is_required(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("someone's files")
    proc = subprocess.run(_command(out), env=cli_env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2 and "already holds files" in proc.stderr
    assert (out / "notes.txt").exists() and not (out / "config.json").exists()
    other = out.parent / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"train": {"epochs": 99}}))
    proc = subprocess.run(_command(other), env=cli_env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2 and "already holds files" in proc.stderr  # not this run's config
    proc = run_cli("train", "--resume", "auto", *SETS)
    assert proc.returncode == 2 and "--resume auto needs --out DIR" in proc.stderr
