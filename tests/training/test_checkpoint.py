"""Checkpoint files: atomic replacement, last-good fallback, no code execution, RNG round trip,
and SIGTERM/SIGINT turned into a stop request."""

from __future__ import annotations

import os
import pickle
import random
import signal

import numpy as np
import pytest
import torch

from xception.errors import WeightsError, WeightsNotFoundError
from xception.training.checkpoint import CHECKPOINT, PREVIOUS, load_checkpoint, save_checkpoint
from xception.training.signals import StopFlag
from xception.training.state import rng_state, set_rng_state


def test_save_keeps_the_previous_and_leaves_no_temp_files(tmp_path):
    save_checkpoint(tmp_path, {"step": 1, "w": torch.ones(3)})
    save_checkpoint(tmp_path, {"step": 2, "w": torch.zeros(3)})
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([CHECKPOINT, PREVIOUS])
    assert load_checkpoint(tmp_path)["step"] == 2
    assert torch.load(tmp_path / PREVIOUS, weights_only=True)["step"] == 1


def test_the_new_file_is_on_disk_before_it_replaces_the_old(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, {"step": 1})
    events: list[str] = []
    fsync, replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(f"-> {os.path.basename(b)}"),
                                                     replace(a, b))[1])
    save_checkpoint(tmp_path, {"step": 2})
    assert events == ["fsync", f"-> {PREVIOUS}", f"-> {CHECKPOINT}"]


def test_a_failed_write_leaves_both_checkpoints_as_they_were(tmp_path):
    save_checkpoint(tmp_path, {"step": 1})
    save_checkpoint(tmp_path, {"step": 2})
    with pytest.raises((pickle.PicklingError, AttributeError)):  # a lambda cannot be pickled
        save_checkpoint(tmp_path, {"step": 3, "f": lambda: 0})
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([CHECKPOINT, PREVIOUS])
    assert load_checkpoint(tmp_path)["step"] == 2
    assert torch.load(tmp_path / PREVIOUS, weights_only=True)["step"] == 1


def test_a_damaged_newest_falls_back_to_the_last_good(tmp_path):
    save_checkpoint(tmp_path, {"step": 1})
    save_checkpoint(tmp_path, {"step": 2})
    data = (tmp_path / CHECKPOINT).read_bytes()
    (tmp_path / CHECKPOINT).write_bytes(data[:len(data) // 2])
    warnings: list[str] = []
    assert load_checkpoint(tmp_path, warn=warnings.append)["step"] == 1
    assert "unreadable" in warnings[0] and PREVIOUS in warnings[0]
    (tmp_path / PREVIOUS).write_bytes(b"junk")
    with pytest.raises(WeightsError, match="unreadable"):
        load_checkpoint(tmp_path, warn=warnings.append)
    with pytest.raises(WeightsNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "elsewhere")


def test_a_checkpoint_cannot_run_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo owned > " + str(tmp_path / "owned"),))

    with open(tmp_path / CHECKPOINT, "wb") as f:
        pickle.dump({"format": "xception-checkpoint/1", "x": Evil()}, f, protocol=2)
    with pytest.raises(WeightsError):
        load_checkpoint(tmp_path)
    assert not (tmp_path / "owned").exists()


def test_rng_states_round_trip_through_a_file(tmp_path):
    torch.manual_seed(1)
    random.seed(2)
    np.random.seed(3)
    save_checkpoint(tmp_path, {"rng": rng_state(torch.device("cpu"))})
    expected = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(9)
    random.seed(9)
    np.random.seed(9)
    set_rng_state(load_checkpoint(tmp_path)["rng"], torch.device("cpu"))
    got = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(expected[0], got[0]) and expected[1:] == got[1:]


def test_stop_flag_turns_sigterm_into_a_request():
    before = signal.getsignal(signal.SIGTERM)
    with StopFlag() as stop:
        assert not stop.is_set
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.is_set and stop.signal == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before
    with StopFlag() as stop, pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)   # first Ctrl-C: a request
        assert stop.is_set
        os.kill(os.getpid(), signal.SIGINT)   # second: stop now
