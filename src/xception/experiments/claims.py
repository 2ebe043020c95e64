"""Several processes sharing one experiment folder: each run is trained by one of them.

On a machine with several cores, two experiment processes with one thread each train about
twice the images per second of one process with two threads. Started with the same command and
the same ``--out``, they divide the runs between them: before training a run, a process claims
it by creating ``claims/<run key>`` exclusively (the file names its host and pid); a run
another live process has claimed is left to it. A claim whose process has died (same host, pid
gone) is taken over, so a killed process's run is redone by whoever comes next. Finished runs
are appended to ``runs.jsonl`` under an exclusive lock, one whole line at a time.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from pathlib import Path

CLAIMS = "claims"  # the sub-folder of an experiment's folder that holds the claims


def _alive(pid: int) -> bool:
    if pid <= 0:  # not a process id: a damaged claim, taken over
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def claim(folder: Path, key: str) -> str | None:
    """Claim run ``key``: None when this process now holds it, else who holds it ("host pid").
    The claim is written to a private file first and then linked into place, so it appears
    whole or not at all."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / key
    me = {"host": socket.gethostname(), "pid": os.getpid()}
    for _ in range(2):
        mine = folder / f".{key}.{me['host']}.{me['pid']}"
        mine.write_text(json.dumps(me))
        try:
            os.link(mine, path)
            return None
        except FileExistsError:
            pass
        finally:
            mine.unlink(missing_ok=True)
        try:
            holder = json.loads(path.read_text())
        except FileNotFoundError:  # released meanwhile: try again
            continue
        except (OSError, ValueError):
            holder = {}
        if holder == me:
            return None
        if holder.get("host") == me["host"] and not _alive(int(holder.get("pid", -1))):
            path.unlink(missing_ok=True)  # a dead process's claim: take it over
            continue
        return f"{holder.get('host', '?')} pid {holder.get('pid', '?')}"
    return "another process"


def release(folder: Path, key: str) -> None:
    (folder / key).unlink(missing_ok=True)


def append_line(path: Path, line: str) -> None:
    """Append one line to ``path`` under an exclusive lock (processes never interleave)."""
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            f.write(line + "\n")
            f.flush()
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
