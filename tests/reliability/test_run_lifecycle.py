"""A training run's lifecycle: it exits when done, leaves nothing behind when refused, owns its
folder, and reports a folder it cannot write in one line.

The table: each case builds its inputs in tmp_path and runs ``xception train`` (a tiny model, a
few dozen images, one epoch) in this process; the outcome is the exit status, fragments of what it
printed (the error line for status 2) and what the run folder holds afterwards (``None``: it does
not exist). A case may then run a second command (a rerun) with its own expected outcome.

Outside the table, in subprocesses: runs with loader workers exit (10 in a row; they used to hang
in Python's exit handler), and a SIGTERM sent to the whole process group (a scheduler's stop) still
saves a checkpoint first. A SIGTERM to the main process only, with a worker, is
tests/training/test_resume.py::test_sigterm_saves_exits_0_and_resumes_bitwise.
"""

from __future__ import annotations

import errno
import importlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from conftest import TINY_RUN, cli_env, save_png, write_broken_files

from xception.cli.main import main
from xception.config import RunConfig, apply_overrides
from xception.files import FolderLock
from xception.training.checkpoint import CHECKPOINT

# the modules (xception.training exports a function named fit)
fit_module = importlib.import_module("xception.training.fit")
checkpoint = importlib.import_module("xception.training.checkpoint")

ONE_EPOCH = [*TINY_RUN, "train.epochs=1"]
SMALL = [*ONE_EPOCH, "data.train_subset=32", "data.val_subset=16", "train.batch_size=8"]
FINISHED = {"config.json", "metrics.jsonl", "metrics.csv", "curves.png", "model.safetensors",
            CHECKPOINT}
NO_SPACE = os.strerror(errno.ENOSPC)


def sets(*extra: str, base: list[str] = SMALL) -> list[str]:
    return [a for s in [*base, *extra] for a in ("--set", s)]


@dataclass
class Outcome:
    status: int
    fragments: tuple[str, ...] = ()      # in stderr for status 2, else in stdout
    folder: set[str] | None = None       # the run folder's names afterwards; None: no folder


@dataclass
class Case:
    id: str
    build: Callable[[Path], list[str]]   # tmp -> the command's arguments (after "train")
    outcome: Outcome
    patch: Callable[[pytest.MonkeyPatch, Path], object] | None = None  # may return a lock to release
    rerun: tuple[Callable[[Path], list[str]], Outcome] | None = None
    keep: tuple[str, ...] = ()  # files outside the run folder that must survive


def into_run(*extra: str) -> Callable[[Path], list[str]]:
    return lambda tmp: [*sets(*extra), "--out", str(tmp / "run")]


def broken_folder(tmp: Path, make_run: bool = False) -> Path:
    """An ImageFolder tree, 3 classes x 4 images, 4 of its 16 training images unreadable."""
    root = tmp / "imagenet"
    for split, n in (("train", 4), ("val", 2)):
        for c, name in enumerate(("ant", "bee", "cat")):
            for i in range(n):
                save_png(root / split / name / f"{i}.png", 100 * c + i + 50 * (split == "val"))
    write_broken_files(root / "train" / "cat")
    if make_run:
        (tmp / "run").mkdir()
    return root


def broken(limit: float, make_run: bool = False) -> Callable[[Path], list[str]]:
    def build(tmp: Path) -> list[str]:
        root = broken_folder(tmp, make_run) if not (tmp / "imagenet").exists() else tmp / "imagenet"
        return [*sets("data.name=imagefolder", f"data.root={root}", f"data.max_bad_fraction={limit}",
                      "train.batch_size=4", base=ONE_EPOCH), "--out", str(tmp / "run")]
    return build


def config_only(tmp: Path) -> Path:
    """A folder holding a run's config.json and no checkpoint (a run killed before its first)."""
    run = tmp / "run"
    run.mkdir(exist_ok=True)
    (run / "config.json").write_text(apply_overrides(RunConfig(), SMALL).to_json() + "\n")
    return run


def resume_it(tmp: Path) -> list[str]:
    return ["--resume", str(config_only(tmp))]


def start_afresh_in_it(tmp: Path) -> list[str]:
    config_only(tmp)
    return into_run()(tmp)


def finished_run(tmp: Path) -> list[str]:
    """A finished run (with its checkpoint), resumed with a head that does not fit the data."""
    assert main(["train", *sets(), "--out", str(tmp / "run")]) == 0
    return ["--resume", str(tmp / "run"), "--set", "model.num_classes=5"]


def hold_lock(monkeypatch: pytest.MonkeyPatch, tmp: Path) -> FolderLock:
    """Another run's lock on tmp/run (flock: an open file of its own conflicts even in-process)."""
    (tmp / "run").mkdir(exist_ok=True)
    lock = FolderLock(tmp / "run")
    assert lock.acquire()
    return lock


def stale_lock(tmp: Path) -> list[str]:
    (tmp / "run").mkdir()
    (tmp / "run" / FolderLock.NAME).write_text("")  # left by a killed run: nobody holds it
    return into_run()(tmp)


def under_a_file(tmp: Path) -> list[str]:
    (tmp / "file").write_text("keep me")
    return [*sets(), "--out", str(tmp / "file" / "run")]


def onto_a_file(tmp: Path) -> list[str]:
    (tmp / "run").write_text("keep me")
    return into_run()(tmp)


class _FullDisk:
    """The ``os`` module as ``checkpoint`` sees it, on a disk that fills after ``room`` bytes (past
    a file's first records: torch.save then reports a RuntimeError, which must become ENOSPC)."""

    def __init__(self, room: int) -> None:
        self.room = room

    def __getattr__(self, name: str):
        return getattr(os, name)

    def write(self, fd: int, data) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, NO_SPACE)
        self.room -= len(data)
        return os.write(fd, data)


def full_disk_at_checkpoint(monkeypatch: pytest.MonkeyPatch, tmp: Path) -> None:
    monkeypatch.setattr(checkpoint, "os", _FullDisk(room=4096))


def full_disk_at_config(monkeypatch: pytest.MonkeyPatch, tmp: Path) -> None:
    real = Path.write_text

    def write_text(self: Path, *args, **kwargs):
        if self.name.startswith(".config.json."):  # files.atomic_write's temporary file
            raise OSError(errno.ENOSPC, NO_SPACE)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)


def ctrl_c_twice(monkeypatch: pytest.MonkeyPatch, tmp: Path) -> None:
    """The second Ctrl-C of the first epoch: KeyboardInterrupt before any checkpoint."""
    def step(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(fit_module, "train_step", step)


CASES = [
    # a refused run removes what it wrote (and the folder it made), so the same command works again
    Case("too-many-unreadable-images", broken(0.1), Outcome(2, ("4 of 16 images", "unreadable")),
         rerun=(broken(0.3), Outcome(0, ("final val top-1",), FINISHED))),
    Case("too-many-unreadable-into-an-empty-folder", broken(0.1, make_run=True),
         Outcome(2, ("unreadable",), set())),
    Case("num-classes-below-the-data's", into_run("model.num_classes=5"),
         Outcome(2, ("model.num_classes=5", "10 classes"))),
    Case("num-classes-above-the-data's", into_run("model.num_classes=12"),
         Outcome(2, ("model.num_classes=12", "10 classes"))),
    Case("in-chans-not-the-data's", into_run("model.in_chans=3"),
         Outcome(2, ("model.in_chans=3", "1-channel images"))),
    Case("ctrl-c-twice-before-the-first-checkpoint", into_run(), Outcome(130, ()), ctrl_c_twice,
         rerun=(into_run(), Outcome(0, ("final val top-1",), FINISHED))),
    Case("resume-refused-keeps-the-run", finished_run,
         Outcome(2, ("model.num_classes=5",), FINISHED)),
    # one run per folder: the lock (.lock, held for the whole run; a fresh run or --resume)
    Case("folder-in-use-by-another-run", into_run(),
         Outcome(2, ("is in use by another run", ".lock"), {FolderLock.NAME}), hold_lock),
    Case("resume-into-a-folder-in-use", resume_it,
         Outcome(2, ("is in use by another run",), {"config.json", FolderLock.NAME}), hold_lock),
    Case("stale-lock-file-is-reused", stale_lock, Outcome(0, ("final val top-1",), FINISHED)),
    Case("resume-a-folder-without-a-checkpoint", resume_it,
         Outcome(2, ("no checkpoint",), {"config.json"})),
    Case("fresh-run-into-a-folder-with-files", start_afresh_in_it,
         Outcome(2, ("already holds files", "it has no checkpoint to resume"), {"config.json"})),
    # a folder that cannot be written: one line naming the path and the reason
    Case("out-under-a-regular-file", under_a_file,
         Outcome(2, ("cannot create the run folder", "file/run", "Not a directory")),
         keep=("file",)),
    Case("out-is-a-regular-file", onto_a_file, Outcome(2, ("is a file, not a folder",)),
         keep=("run",)),
    Case("disk-full-writing-the-checkpoint", into_run(),
         Outcome(2, ("cannot write", "checkpoint.pt", NO_SPACE)), full_disk_at_checkpoint,
         rerun=(into_run(), Outcome(0, ("final val top-1",), FINISHED))),
    Case("disk-full-writing-config.json", into_run(),
         Outcome(2, ("cannot write", "config.json", NO_SPACE)), full_disk_at_config),
]


def run_train(args: list[str], capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        status = main(["train", *args])
    except KeyboardInterrupt:  # what the CLI turns into status 130 ...
        status = 130
    out, err = capsys.readouterr()
    return status, out, err


def check(outcome: Outcome, got: tuple[int, str, str], run: Path) -> None:
    status, out, err = got
    assert status == outcome.status, f"{out}\n{err}"
    text = err if status == 2 else out
    if status == 2:
        assert len(err.strip().splitlines()) == 1, err  # one line, no traceback
    for fragment in outcome.fragments:
        assert fragment in text, text
    if outcome.folder is None:
        assert not run.exists() or not run.is_dir(), sorted(p.name for p in run.iterdir())
    else:
        assert run.is_dir() and {p.name for p in run.iterdir()} == outcome.folder


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_run_lifecycle(case: Case, tmp_path: Path, capsys, monkeypatch, one_thread) -> None:
    args = case.build(tmp_path)
    with monkeypatch.context() as patched:
        held = case.patch(patched, tmp_path) if case.patch is not None else None
        got = run_train(args, capsys)
    try:
        check(case.outcome, got, tmp_path / "run")
    finally:
        if isinstance(held, FolderLock):
            held.release()
    for name in case.keep:
        assert (tmp_path / name).read_text() == "keep me"
    if case.rerun is not None:
        build, outcome = case.rerun
        check(outcome, run_train(build(tmp_path), capsys), tmp_path / "run")


def test_the_lock_is_held_for_the_whole_run(tmp_path: Path, monkeypatch, one_thread) -> None:
    """While the run trains, a second taker of the lock is refused; afterwards no .lock is left."""
    out, taken = tmp_path / "run", []
    real = fit_module.train_step

    def step(*args, **kwargs):
        other = FolderLock(out)
        taken.append(other.acquire())
        other.release()
        return real(*args, **kwargs)

    monkeypatch.setattr(fit_module, "train_step", step)
    fit_module.fit(apply_overrides(RunConfig(), SMALL), out, log=lambda _: None)
    assert taken == [False] * 4
    assert {p.name for p in out.iterdir()} == FINISHED


# ---- subprocesses: loader workers ---------------------------------------------------------------

def _train(out: Path, *extra: str, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "xception", "train", *extra, "--out", str(out)],
                            env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **popen)


def test_runs_with_loader_workers_exit(tmp_path: Path) -> None:
    """10 runs in a row, 2 persistent workers each: every one exits 0 once it has finished.
    Workers defer SIGTERM (a stop request is the main process's); they used to ignore it, and
    Python's exit handler, which terminates daemon workers and waits for them, hung."""
    seconds = []
    for i in range(10):
        t0 = time.monotonic()
        proc = _train(tmp_path / f"run{i}", *sets(), "--workers", "2", "--no-progress")
        try:
            out, err = proc.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"run {i} did not exit ({'finished' if 'final val' in out else 'running'})"
                        f"\n{out}\n{err}")
        seconds.append(time.monotonic() - t0)
        assert proc.returncode == 0, err
        assert "final val top-1" in out
        assert {p.name for p in (tmp_path / f"run{i}").iterdir()} == FINISHED
    print("exit times (s):", " ".join(f"{s:.1f}" for s in seconds))


def test_sigterm_to_the_process_group_saves_a_checkpoint_first(tmp_path: Path) -> None:
    """A scheduler's stop (SIGTERM to every process of the job, workers too): the workers keep
    serving until the main process has saved its checkpoint, then the run exits 0."""
    out = tmp_path / "run"
    proc = _train(out, *sets("data.train_subset=160", "train.epochs=50", "train.checkpoint_every=2"),
                  "--workers", "2", start_new_session=True)
    deadline = time.monotonic() + 240
    while not (out / CHECKPOINT).exists():
        assert proc.poll() is None, f"the run ended early: {proc.communicate()}"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.01)
    first = torch.load(out / CHECKPOINT, weights_only=True)["progress"]["global_step"]
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        stdout, stderr = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"the stopped run did not exit: {proc.communicate()}")
    assert proc.returncode == 0, stderr
    assert "interrupted at step" in stdout and "DataLoader worker" not in stderr
    ckpt = torch.load(out / CHECKPOINT, weights_only=True)
    step = ckpt["progress"]["global_step"]
    assert first <= step < 50 * 20 and f"interrupted at step {step};" in stdout
    assert json.loads((out / "config.json").read_text())["train"]["epochs"] == 50
    assert not (out / "model.safetensors").exists() and not (out / FolderLock.NAME).exists()
