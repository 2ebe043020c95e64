"""Where a result came from: the code (commit, dirty tree), the library versions, the machine.

Every experiment record carries ``environment()`` so that it stands on its own (a copied run
keeps its own), and ``NUMERICS_VERSION`` says which arithmetic the code computes: it is bumped
deliberately by a change that alters trained weights for the same settings and seed (a new
kernel path, another rounding), so that a record made before such a change is never taken as
"already done". Records without it predate versioning (``UNVERSIONED``).
"""

from __future__ import annotations

import contextlib
import functools
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

# 1: the first deliberate version (the CPU 1x1 matrix-product path, fused SGD/AdamW). Bump it
# with every change that alters the weights a run trains to; say why in the commit.
NUMERICS_VERSION = 1
UNVERSIONED = 0  # what a record without a numerics version is taken to be

_SOURCE = Path(__file__).resolve().parent  # src/xception


def cpu_name() -> str:
    """The processor's model name (``/proc/cpuinfo``), else what ``platform`` says."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


@functools.cache
def code_version() -> dict[str, Any]:
    """The git commit of this package's source and whether its tracked files differ from it
    (``None`` for both when it is not a git checkout, e.g. an installed wheel), read once per
    process: work that trains calls it when it starts (``experiments.runner``, the versus pilot),
    so a long run records the code it loaded, even if the checkout moves on while it trains."""
    def git(*args: str) -> str | None:
        try:
            return subprocess.run(["git", *args], cwd=_SOURCE, capture_output=True, text=True,
                                  timeout=20, check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    commit = git("rev-parse", "HEAD")
    changes = git("status", "--porcelain", "--untracked-files=no", "--", ".") if commit else None
    return {"commit": commit, "dirty": bool(changes) if commit else None}


def environment(threads: int) -> dict[str, Any]:
    """What a run ran on: code, numerics version, Python and library versions, threads,
    machine, and when it finished (UTC)."""
    import numpy
    import torch

    return {**code_version(), "numerics": NUMERICS_VERSION,
            "python": platform.python_version(), "torch": torch.__version__,
            "numpy": numpy.__version__, "threads": threads, "machine": platform.machine(),
            "cpu": cpu_name(), "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}

