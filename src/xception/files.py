"""Atomic file writes: a crash or a bad input never leaves a half-written file behind; a folder
lock that keeps two processes out of one run folder.

A write that the operating system refuses (read-only file system, a path under a regular file, a
full disk) raises ``OutputError`` naming the path and the reason, not a traceback.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from .errors import OutputError, XceptionError


def os_reason(e: OSError) -> str:
    """``No space left on device``: the operating system's words for an error, without the path."""
    return e.strerror or str(e)


def atomic_write(path: str | Path, write: Callable[[str], object], *, fsync: bool = False,
                 backup: str | Path | None = None) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it over ``path``.

    ``fsync``: flush the new file to disk before the rename, so a power cut leaves the old or the
    new file, never an empty one (checkpoints). ``backup``: the file being replaced is first
    renamed there (a last-good copy), so at every moment one complete file exists.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
    except OSError as e:
        raise OutputError(f"cannot write {str(path)!r}: {os_reason(e)}") from e
    try:
        write(tmp)
        if fsync:
            _fsync(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        if backup is not None and path.exists():
            os.replace(path, backup)
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and not isinstance(e, XceptionError):
            raise OutputError(f"cannot write {str(path)!r}: {os_reason(e)}") from e
        raise
    return path


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


class FolderLock:
    """An exclusive lock on ``folder/.lock`` (``flock``, not waiting): one process per folder.

    ``acquire`` returns False when another process holds it. ``release`` removes the file and
    then lets go, so a finished run leaves nothing behind; a file left by a killed process holds
    no lock (the kernel drops it with the process) and is taken over. Processes forked while the
    lock is held (loader workers) share it until they exit.
    """

    NAME = ".lock"

    def __init__(self, folder: str | Path) -> None:
        self.path = Path(folder) / self.NAME
        self._fd: int | None = None

    def acquire(self) -> bool:
        while self._fd is None:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as e:
                raise OutputError(f"cannot write {str(self.path)!r}: {os_reason(e)}") from e
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            except OSError as e:  # a file system without locks
                os.close(fd)
                raise OutputError(f"cannot lock {str(self.path)!r}: {os_reason(e)}") from e
            try:  # the holder may have removed the file between our open and its release
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                self._fd = fd
            else:
                os.close(fd)  # locked a removed file: try the one that is there now
        return True

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):  # if it stays (read-only now), it holds no lock once closed
            self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None


def printable(text: str) -> str:
    """``text`` safe to print or log as UTF-8. A file name that is not valid UTF-8 reaches Python
    with its bad bytes as lone surrogates (surrogateescape), which no UTF-8 stream can write; they
    become ``\\xff`` escapes here, everything else is unchanged. ``predict`` and the skipped-image
    warnings use it for every path they show."""
    try:
        return os.fsencode(text).decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate surrogateescape did not make
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
