"""Fetching the official Keras ImageNet weights: only when asked, checked by MD5, written atomically.

Nothing in the package downloads on its own: ``xception convert keras:imagenet DST`` fails with
instructions unless ``--download`` is given. The URLs and MD5 sums are those Keras itself uses.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..errors import WeightsError, WeightsNotFoundError
from ..files import atomic_write

_BASE = "https://storage.googleapis.com/tensorflow/keras-applications/xception/"


@dataclass(frozen=True)
class Remote:
    filename: str
    url: str
    md5: str


KERAS_IMAGENET = {
    "keras:imagenet": Remote("xception_weights_tf_dim_ordering_tf_kernels.h5",
                             _BASE + "xception_weights_tf_dim_ordering_tf_kernels.h5",
                             "0a58e3b7378bc2990ea3b43d5981f1f6"),
    "keras:imagenet-notop": Remote("xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
                                   _BASE + "xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
                                   "b0042744bf5b25fce3cb969f33bebb97"),
}


def cache_dir() -> Path:
    """``$XCEPTION_CACHE``, else ``~/.cache/xception``."""
    return Path(os.environ.get("XCEPTION_CACHE") or Path.home() / ".cache" / "xception")


def md5sum(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch(url: str, dest: str | Path, md5: str | None = None) -> Path:
    """Download ``url`` to ``dest``; on a failed transfer or a wrong MD5 nothing is written."""
    dest = Path(dest)

    def write(tmp: str) -> None:
        try:
            with urllib.request.urlopen(url, timeout=60) as r, open(tmp, "wb") as f:
                shutil.copyfileobj(r, f, 1 << 20)
        except (urllib.error.URLError, OSError, ValueError) as e:
            raise WeightsNotFoundError(f"cannot download {url}: {e}") from None
        if md5 is not None and (got := md5sum(Path(tmp))) != md5.lower():
            raise WeightsError(f"{url} arrived with MD5 {got}, expected {md5}: "
                               "a damaged or different file; nothing was saved")

    return atomic_write(dest, write)


def resolve_remote(name: str, download: bool, url: str | None = None, md5: str | None = None,
                   directory: str | Path | None = None) -> Path:
    """The local copy of a named remote file, fetched only when ``download`` is true."""
    remote = KERAS_IMAGENET[name]
    url, md5 = url or remote.url, md5 or remote.md5
    path = Path(directory or cache_dir()) / remote.filename
    if path.is_file():
        return path
    if not download:
        raise WeightsNotFoundError(
            f"{name} is not on this machine ({path}). Pass --download to fetch it from {url} "
            f"(about 90 MB), or download it yourself and convert the file: "
            f"curl -L -o {remote.filename} {url}")
    return fetch(url, path, md5)
