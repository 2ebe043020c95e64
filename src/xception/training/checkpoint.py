"""Checkpoint files: written so that a crash never loses the last good one, read without running code.

What goes into a checkpoint is ``TrainState.state_dict()`` (``state``); this module only moves it
to and from disk. It is written through ``files.atomic_write`` (temporary file, fsync, rename over
``checkpoint.pt``); the file it replaces stays as ``checkpoint-prev.pt`` (the last good one), and
loading falls back to it if the newest is unreadable. Files are read with
``torch.load(weights_only=True)``: a checkpoint cannot run code.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..errors import WeightsError, WeightsNotFoundError
from ..files import atomic_write

FORMAT = "xception-checkpoint/1"
CHECKPOINT = "checkpoint.pt"
PREVIOUS = "checkpoint-prev.pt"


class _WriteAll(io.RawIOBase):
    """A file that writes every byte or raises (and keeps) the OSError. ``torch.save`` turns an
    error of the file it writes into a RuntimeError about a position; ``_save`` restores it."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        self.error: OSError | None = None

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        size = view.nbytes
        try:
            while view:
                view = view[os.write(self.fd, view):]
        except OSError as e:
            self.error = e
            raise
        return size

    def close(self) -> None:
        if not self.closed:
            os.close(self.fd)
        super().close()


def _save(state: dict[str, Any], tmp: str) -> None:
    """``torch.save`` to ``tmp``; a full disk raises the OSError (ENOSPC), not a RuntimeError."""
    with _WriteAll(tmp) as f:
        try:
            torch.save(state, f)
        except RuntimeError:
            if f.error is not None:
                raise f.error from None
            raise


def has_checkpoint(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds a checkpoint to resume (the newest or its fallback)."""
    return any((Path(run_dir) / name).is_file() for name in (CHECKPOINT, PREVIOUS))


def save_checkpoint(run_dir: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` as the run's checkpoint; the previous one becomes ``checkpoint-prev.pt``.
    A refused write (disk full, read-only) raises ``OutputError`` and leaves the old files."""
    run_dir = Path(run_dir)
    return atomic_write(run_dir / CHECKPOINT, lambda tmp: _save({"format": FORMAT, **state}, tmp),
                        fsync=True, backup=run_dir / PREVIOUS)


def _read(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, foreign pickle, ...: all mean "not usable"
        raise WeightsError(f"checkpoint {str(path)!r} is unreadable: {e}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise WeightsError(f"{str(path)!r} is not an xception training checkpoint")
    return state


def load_checkpoint(run_dir: str | Path, warn: Callable[[str], None] = print) -> dict[str, Any]:
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
