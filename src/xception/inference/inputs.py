"""Image files and folders given on the command line, read in batches through a ``DataLoader``.

A folder is searched recursively for the image extensions an ImageFolder scan takes
(``data.folders.IMG_EXTENSIONS``, any case), symbolic links followed, each real folder once (a
link back up cannot loop), in sorted order. A file given by name is taken whatever its extension.
Each image is read by ``load_image`` with the weights' preprocessing, as ``predict`` always read
it; one that cannot be read comes back as a ``BadSample`` (path, reason) and the batch goes on.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from ..data.datasets import Target
from ..data.folders import IMG_EXTENSIONS
from ..data.images import BadSample
from ..data.loading import Batch, make_loader, shutdown_workers
from ..data.preprocess import Preprocess, load_image
from ..errors import ConfigError, DataError
from ..files import printable


class NothingRead(DataError):
    """Not one of the inputs could be read, so nothing was written."""


@dataclass(frozen=True)
class FoundImages:
    """The image files to read, in order, and where they came from."""

    paths: list[str]
    files: int     # given by name
    folders: int   # searched

    def describe(self) -> str:
        """``2,000 image files (1,998 in 1 folder, 2 given by name)``."""
        parts = []
        if self.folders:
            parts.append(f"{len(self.paths) - self.files:,} in {self.folders:,} "
                         f"folder{'s' * (self.folders != 1)}")
        if self.files:
            parts.append(f"{self.files:,} given by name")
        return f"{len(self.paths):,} image file{'s' * (len(self.paths) != 1)} ({', '.join(parts)})"


def _walk(folder: str) -> list[str]:
    """The image files under ``folder``, recursively, sorted; each real folder visited once."""
    found: list[str] = []
    seen: set[str] = set()

    def refuse(e: OSError) -> None:
        raise DataError(f"cannot list the folder {e.filename!r} ({e.strerror or e}); make it "
                        "readable or leave it out") from None

    for here, dirs, files in os.walk(folder, onerror=refuse, followlinks=True):
        real = os.path.realpath(here)
        if real in seen:  # a link to a folder already searched (or to one above it)
            dirs[:] = []
            continue
        seen.add(real)
        dirs.sort()
        found += [os.path.join(here, f) for f in sorted(files) if f.lower().endswith(IMG_EXTENSIONS)]
    return found


def find_images(inputs: Sequence[str | Path]) -> FoundImages:
    """The image files named by ``inputs`` (files, and folders searched recursively).

    An input that does not exist is a ``DataError`` (a typo, not an unreadable image); so is a
    set of inputs that holds no image file at all."""
    paths: list[str] = []
    files = folders = 0
    for given in inputs:
        text = os.fspath(given)
        if os.path.isdir(text):
            folders += 1
            paths += _walk(text)
        elif os.path.lexists(text):  # a link to nothing is listed, then counted as unreadable
            files += 1
            paths.append(text)
        else:
            raise DataError(f"input {text!r} does not exist; give image files or folders of "
                            "them")
    if not paths:
        shown = ", ".join(repr(os.fspath(g)) for g in list(inputs)[:3])
        raise DataError(f"no image files in {shown}{' ...' if len(inputs) > 3 else ''} "
                        f"(searched for {', '.join(IMG_EXTENSIONS)})")
    return FoundImages(paths, files, folders)


class ImageFiles(Dataset):
    """Image files prepared as ``predict`` prepares them (``load_image`` with ``pre``).

    Item i is ``(image, targets[i])`` (``targets`` default to the positions, so a batch says which
    files it holds) or a ``BadSample`` for a file that cannot be read."""

    def __init__(self, paths: Sequence[str], pre: Preprocess,
                 targets: Sequence[Target] | None = None, num_classes: int = 0,
                 multi_label: bool = False) -> None:
        self.paths, self.pre = list(paths), pre
        self.targets = list(range(len(self.paths))) if targets is None else list(targets)
        self.num_classes, self.multi_label = num_classes, multi_label

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[Any, Target] | BadSample:
        path = self.paths[i]
        try:
            return load_image(path, self.pre), self.targets[i]
        except DataError as e:
            return BadSample(path, str(getattr(e, "reason", e))[:200])
        except Exception as e:  # noqa: BLE001 - a transform's error on one file: skip it
            return BadSample(path, f"{type(e).__name__}: {e}"[:200])


class Positions(Dataset):
    """A data set's items with their positions as targets (embeddings keep labels aside)."""

    def __init__(self, ds: Dataset) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> tuple[Any, int] | BadSample:
        item = self.ds[i]
        return item if isinstance(item, BadSample) else (item[0], i)


def batches(ds: Dataset, batch_size: int, num_workers: int = 0) -> Iterator[Batch]:
    """``ds`` in order, ``batch_size`` items at a time, read by ``num_workers`` loader processes
    (0: this one); only a few batches are ever in memory. The workers end with the iteration."""
    loader = make_loader(ds, batch_size, False, num_workers)
    try:
        yield from loader
    finally:
        shutdown_workers(loader)


def skip_bad(items: Iterable[Any], on_bad: Callable[[BadSample], None]) -> Iterator[Any]:
    """``items`` without the ``BadSample``s, each of which goes to ``on_bad`` first."""
    for item in items:
        if isinstance(item, BadSample):
            on_bad(item)
        else:
            yield item


def bad_line(bad: BadSample) -> str:
    """One line for the list of unreadable files (non-UTF-8 names escaped)."""
    return printable(f"  {bad.path}: {bad.reason}")


def output_format(path: str | Path, formats: Sequence[str], what: str) -> str:
    """The suffix of an output file among ``formats`` (``what``: "predictions are written as
    CSV or JSONL"); anything else is refused before any work."""
    suffix = Path(path).suffix.lower()
    if suffix not in formats:
        raise ConfigError(f"--out {str(path)!r}: {what}; end the file name with "
                          f"{' or '.join(formats)}")
    return suffix
