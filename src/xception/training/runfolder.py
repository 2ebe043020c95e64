"""The run folder: one run at a time (a lock), new or empty for a fresh run, and left as it was
found when a fresh run fails before it has anything to keep."""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, OutputError
from ..files import FolderLock, atomic_write_text, os_reason
from .checkpoint import CHECKPOINT, PREVIOUS, has_checkpoint

# What a run writes into its folder (docs/run-folder.md); a fresh run that fails before it
# has anything to keep removes these again.
RUN_FILES = ("config.json", "metrics.jsonl", "metrics.csv", "curves.png", "model.safetensors",
             "model_raw.safetensors", "tensorboard")


def prepare_out_dir(out_dir: Path, create: bool = True) -> None:
    """A run folder must be new (or empty but for its lock): results of two runs are never mixed."""
    if out_dir.exists() and any(p.name != FolderLock.NAME for p in out_dir.iterdir()):
        resumable = has_checkpoint(out_dir)
        raise ConfigError(f"run folder {str(out_dir)!r} already holds files; choose another --out "
                          + ("(or --resume it)" if resumable else "(it has no checkpoint to resume)"))
    if create:
        out_dir.mkdir(parents=True, exist_ok=True)


@dataclass
class RunFolder:
    """Rank 0's hold on the run folder, from before set-up until the run has ended.

    ``open`` makes the folder if needed, takes its lock (``.lock``: a second run into the same
    folder, fresh or ``--resume``, fails at once) and checks that a fresh run's folder is empty.
    ``close`` lets go. A fresh run that fails before it has anything to keep (a checkpoint or
    the final weights) leaves the folder as it found it: it removes the files a run writes
    (``RUN_FILES``, nothing else) and the folder if it made it, so the same command can simply
    be run again. A resumed run keeps everything: its checkpoint is still the one to resume from.
    """

    path: Path
    resume: bool
    made: bool = False                # this run made the folder
    empty: bool = False               # a fresh run's folder was empty: what it holds is this run's
    lock: FolderLock | None = None

    def open(self) -> None:
        if self.resume and not self.path.is_dir():
            return  # load_checkpoint says that there is nothing to resume
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"run folder {str(self.path)!r} is a file, not a folder")
        try:
            self.path.mkdir(parents=True)
            self.made = True
        except FileExistsError:
            pass
        except OSError as e:
            raise OutputError(f"cannot create the run folder {str(self.path)!r}: "
                              f"{os_reason(e)}") from e
        lock = FolderLock(self.path)
        if not lock.acquire():
            raise ConfigError(f"run folder {str(self.path)!r} is in use by another run (which holds "
                              f"{str(lock.path)!r}); wait for it to end or choose another --out")
        self.lock = lock
        if not self.resume:
            prepare_out_dir(self.path, create=False)
            self.empty = True

    def write_config(self, config_json: str) -> None:
        """``config.json``: what the run is, written once its data and model are known to work
        (a resumed run rewrites it with the settings it continues under)."""
        atomic_write_text(self.path / "config.json", config_json + "\n")

    def close(self, failed: bool) -> None:
        if self.lock is None:
            return  # it was never ours: another run's, or nothing to resume
        keep = not (failed and self.empty) or any(
            (self.path / name).exists() for name in (CHECKPOINT, PREVIOUS, "model.safetensors"))
        if not keep:
            for name in RUN_FILES:
                path = self.path / name
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
        self.lock.release()
        self.lock = None
        if not keep and self.made:
            with contextlib.suppress(OSError):  # only if empty: what someone else put there stays
                self.path.rmdir()
