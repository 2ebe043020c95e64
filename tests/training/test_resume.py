"""Kill a run (SIGKILL after a checkpoint, or SIGTERM), resume it: the result is bitwise the same.

The tiny run uses everything whose state must survive: SGD momentum, a cosine LR schedule, EMA,
dropout (RNG), random augmentation, a shuffled data order and BatchNorm statistics recomputed
before each evaluation, and it is stopped mid-epoch.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY_RUN, cli_env, run_cli, wait_for_checkpoint
from safetensors.torch import load_file

from xception.cli.main import build_parser
from xception.cli.train import resolve_config
from xception.config import RunConfig
from xception.training.checkpoint import CHECKPOINT
from xception.training.fit import fit

RUN = [*TINY_RUN, "data.train_subset=160", "data.val_subset=20", "train.batch_size=8",
       "train.epochs=3", "train.checkpoint_every=3", "model.dropout=0.3", "train.ema=true",
       "train.ema_decay=0.9", "train.bn_recalibration=2"]
TIMING = {"train_img_per_s", "epoch_seconds", "peak_mem_mb"}


def _sets(extra: list[str]) -> list[str]:
    return [arg for s in RUN + extra for arg in ("--set", s)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted run (in this process; same thread count as the CLI runs), with the
    config that the CLI resolves from the same arguments."""
    out = tmp_path_factory.mktemp("ref") / "run"
    fit(resolve_config(build_parser().parse_args(["train", *_sets([])])), out, log=lambda _: None)
    return out


def _same_run(a: Path, b: Path) -> None:
    for name in ("model.safetensors", "model_raw.safetensors"):
        wa, wb = load_file(a / name), load_file(b / name)
        assert wa.keys() == wb.keys()
        for k in wa:
            assert torch.equal(wa[k], wb[k]), f"{name}: {k} differs"
    rows = [[{k: v for k, v in json.loads(line).items() if k not in TIMING}
             for line in (d / "metrics.jsonl").read_text().splitlines()] for d in (a, b)]
    assert rows[0] == rows[1]


def _start(out: Path, extra: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "xception", "train", "--out", str(out),
                             *_sets(extra)], env=cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _step(out: Path) -> int:
    return torch.load(out / CHECKPOINT, weights_only=True)["progress"]["global_step"]


def test_sigkill_then_resume_is_bitwise_identical(tmp_path, reference):
    out = tmp_path / "run"
    proc = _start(out, [])
    wait_for_checkpoint(proc, out)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert _step(out) < 60 and not (out / "model.safetensors").exists()
    cfg = RunConfig.load(out / "config.json")
    fit(cfg, out, log=lambda _: None, resume=True)  # the API path (the CLI one is tested below)
    _same_run(reference, out)


def test_sigterm_saves_exits_0_and_resumes_bitwise(tmp_path, reference):
    out = tmp_path / "run"
    proc = _start(out, ["data.num_workers=1"])  # a worker process too: it must not die first
    wait_for_checkpoint(proc, out)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert "interrupted at step" in stdout and "--resume" in stdout
    stopped_at = _step(out)
    assert 3 <= stopped_at < 60
    assert not (out / "model.safetensors").exists()
    proc = run_cli("train", "--resume", str(out), "--set", "data.num_workers=0", check=True)
    assert f"resuming at epoch {stopped_at // 20 + 1} step {stopped_at % 20}" in proc.stdout
    _same_run(reference, out)


class _Killed(BaseException):
    """A process gone right after a checkpoint (what SIGKILL leaves, without a subprocess)."""


def test_a_time_cadence_checkpoints_mid_epoch_and_resumes_bitwise(tmp_path, reference,
                                                                  monkeypatch):
    from xception.training.fit import _Run

    real, saved = _Run._checkpoint, []

    def checkpoint_then_die(self):
        real(self)
        saved.append(self.state.progress.global_step)
        if len(saved) == 4:
            raise _Killed

    monkeypatch.setattr(_Run, "_checkpoint", checkpoint_then_die)

    def config(seconds):
        sets = _sets(["train.checkpoint_every=0", f"train.checkpoint_every_s={seconds}"])
        return resolve_config(build_parser().parse_args(["train", *sets]))

    fit(config(1e9), tmp_path / "never", log=lambda _: None)  # never due: the epoch ends only
    assert saved == [20, 40, 60]
    saved.clear()
    out = tmp_path / "run"
    with pytest.raises(_Killed):  # due after every step: 1e-9 s have always passed
        fit(config(1e-9), out, log=lambda _: None)
    assert saved == [1, 2, 3, 4] and _step(out) == 4
    monkeypatch.setattr(_Run, "_checkpoint", real)
    fit(RunConfig.load(out / "config.json"), out, log=lambda _: None, resume=True)
    _same_run(reference, out)
