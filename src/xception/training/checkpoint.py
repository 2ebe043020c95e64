"""Checkpoints that survive a crash, exact resume, and stopping cleanly on SIGTERM/SIGINT.

A checkpoint holds everything the next step depends on: model, optimizer, LR scheduler, EMA,
gradient scaler, every process's RNG state, the data position (epoch, step in epoch) and the
metrics so far. It is written to a temporary file, flushed to disk and renamed over
``checkpoint.pt``; the one it replaces stays as ``checkpoint-prev.pt`` (the last good one), and
loading falls back to it if the newest is unreadable. Files are read with
``torch.load(weights_only=True)``: a checkpoint cannot run code.
"""

from __future__ import annotations

import os
import random
import signal
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import WeightsError, WeightsNotFoundError

FORMAT = "xception-checkpoint/1"
CHECKPOINT = "checkpoint.pt"
PREVIOUS = "checkpoint-prev.pt"


def save_checkpoint(run_dir: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` as the run's checkpoint; the previous one becomes ``checkpoint-prev.pt``."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / CHECKPOINT
    fd, tmp = tempfile.mkstemp(dir=run_dir, prefix=f".{CHECKPOINT}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual permissions
        if path.exists():
            os.replace(path, run_dir / PREVIOUS)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _read(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, foreign pickle, ...: all mean "not usable"
        raise WeightsError(f"checkpoint {str(path)!r} is unreadable: {e}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise WeightsError(f"{str(path)!r} is not an xception training checkpoint")
    return state


def load_checkpoint(run_dir: str | Path, warn: Any = print) -> dict[str, Any]:
    """The newest readable checkpoint of a run (the previous one if the newest is damaged)."""
    run_dir = Path(run_dir)
    candidates = [p for p in (run_dir / CHECKPOINT, run_dir / PREVIOUS) if p.is_file()]
    if not candidates:
        raise WeightsNotFoundError(f"no checkpoint in {str(run_dir)!r} to resume from")
    for i, path in enumerate(candidates):
        try:
            return _read(path)
        except WeightsError as e:
            if i == len(candidates) - 1:
                raise
            warn(f"warning: {e}; falling back to {candidates[i + 1].name}")
    raise AssertionError("unreachable")


def rng_state(device: torch.device) -> dict[str, Any]:
    """This process's RNG states in types ``weights_only`` loading accepts."""
    mt, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": version, "internal": list(internal), "gauss": py_gauss},
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


class StopFlag:
    """Turns SIGTERM/SIGINT into a request to stop at the next step boundary.

    A second SIGINT (Ctrl-C twice) stops at once with ``KeyboardInterrupt``. Handlers are only
    installed in the main thread and are restored on exit.
    """

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def is_set(self) -> bool:
        return self.signal is not None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signal == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signum

    def __enter__(self) -> StopFlag:
        import threading

        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGTERM, signal.SIGINT):
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()
