"""Image files on disk: an ImageFolder tree (ImageNet layout) or a multi-label manifest (JFT-style).

ImageFolder: ``ROOT/train/<class>/*.jpg`` and ``ROOT/val/<class>/*.jpg``; classes are the sorted
folder names of ``train/``. The tree is scanned as torchvision's ``ImageFolder`` scans it (same
extensions, same order, symbolic links followed) with two differences: a link back into a folder
being scanned (``ln -s . train/a/again``, or a link to ``train/`` or ``ROOT``) is refused with a
``DataError`` instead of being followed until paths hit the length limit, and so is an image
name that is a FIFO, device or socket (reading it would block). Links that point elsewhere are
followed; a link to nothing is listed and then counted as an unreadable image, like a broken file.

Manifest: ``ROOT/classes.txt`` (one class name per line) and ``ROOT/train.jsonl`` / ``val.jsonl``
(one ``{"path": "...", "labels": ["cat", "dog"]}`` per line) or ``train.csv`` / ``val.csv`` (a
header with ``path`` and ``labels`` columns, labels separated by ``;``). Paths are relative to
ROOT and must stay inside it: an absolute path, or one whose ``..`` leads out of ROOT, is a
``DataError`` naming the file and line (a link inside ROOT may point anywhere). Labels are class
names (JSONL may also give integer class indices). The text files must be UTF-8 (a byte-order
mark is allowed); anything else is a ``DataError`` naming the file and line.
"""

from __future__ import annotations

import csv
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..errors import DataError
from .datasets import FileSource, Target

# torchvision's ImageFolder extensions (``torchvision.datasets.folder.IMG_EXTENSIONS``), matched
# case-insensitively
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def _list_dir(path: str) -> list[os.DirEntry]:
    try:
        with os.scandir(path) as it:
            return list(it)
    except OSError as e:
        raise DataError(f"cannot list the ImageFolder folder {path!r} ({e.strerror or e}); make it "
                        "readable or remove it") from None


def _inside(real: str, folder: str) -> bool:
    """Whether the real path ``real`` is ``folder`` or inside it."""
    return real == folder or real.startswith(folder.rstrip(os.sep) + os.sep)


def _class_files(class_dir: str, split_real: str) -> list[str]:
    """The image files under ``class_dir``, in torchvision's order (``sorted(os.walk(...,
    followlinks=True))``, each folder's files sorted). A link to a folder that holds one of the
    folders being scanned (its chain of ancestors, the split folder) would be walked forever and
    is refused; so is an image name that is a FIFO, device or socket."""
    found: list[tuple[str, list[str]]] = []
    real = os.path.realpath(class_dir)
    if _inside(split_real, real):  # a class "folder" that is a link to the split folder or above
        raise DataError(f"ImageFolder: {class_dir!r} is a symbolic link to {real!r}, which holds "
                        f"the split folder itself (a loop); remove the link or point it elsewhere")
    # (logical path, the real paths of the folders from the split folder down to it)
    stack = [(class_dir, (split_real, real))]
    while stack:
        here, chain = stack.pop()
        files = []
        for entry in _list_dir(here):
            path = os.path.join(here, entry.name)
            if entry.is_dir():  # follows links, as os.walk(followlinks=True) does
                real = os.path.realpath(path) if entry.is_symlink() else \
                    os.path.join(chain[-1], entry.name)
                if entry.is_symlink() and any(_inside(c, real) for c in chain):
                    raise DataError(
                        f"ImageFolder: {path!r} is a symbolic link to {real!r}, which holds the "
                        f"folders being scanned (a loop: following it lists the same images again "
                        f"and again); remove the link, or point it at a folder that does not hold "
                        f"it")
                stack.append((path, (*chain, real)))
            elif entry.name.lower().endswith(IMG_EXTENSIONS):
                if not entry.is_file():  # not a regular file (after links), or a link to nothing
                    try:
                        mode = os.stat(path).st_mode
                    except OSError:
                        mode = None  # a dangling link: listed, then counted as unreadable
                    if mode is not None and not stat.S_ISREG(mode):
                        raise DataError(f"ImageFolder: {path!r} is not a regular file (a FIFO, "
                                        "device or socket; reading it would block); remove it")
                files.append(entry.name)
        found.append((here, sorted(files)))
    return [os.path.join(d, f) for d, names in sorted(found) for f in names]


def scan_image_folder(root: Path, split: str, classes: list[str] | None = None
                      ) -> tuple[FileSource, list[str]]:
    """The files of ``root/split`` and the class list (the given one, or the folder names)."""
    folder = root / split
    if not folder.is_dir():
        raise DataError(f"ImageFolder split {str(folder)!r} does not exist; expected "
                        f"{str(root)}/{{train,val}}/<class>/<image files>")
    top = str(folder)
    found = sorted(e.name for e in _list_dir(top) if e.is_dir())
    if not found:
        raise DataError(f"{top!r} has no class sub-folders; expected {top}/<class>/<image files>")
    split_real = os.path.realpath(top)
    paths: list[str] = []
    labels: list[int] = []
    for c, name in enumerate(found):
        files = _class_files(os.path.join(top, name), split_real)
        paths += files
        labels += [c] * len(files)
    if not paths:
        raise DataError(f"{top!r} holds no image files in class sub-folders")
    if classes is None:
        return FileSource(paths, labels), found
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise DataError(f"{top!r} has classes the training split lacks: {unknown[:5]}")
    index = {name: i for i, name in enumerate(classes)}
    return FileSource(paths, [index[found[c]] for c in labels]), classes


def _read_text(path: Path, what: str) -> str:
    """A small text file (class list, class weights), refused unless it is a regular UTF-8 file."""
    try:
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):
            raise DataError(f"{what} {str(path)!r} is not a regular file; give a text file")
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{what} {str(path)!r} does not exist") from None
    except OSError as e:
        raise DataError(f"cannot read {what} {str(path)!r}: {e.strerror or e}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise _not_utf8(path, data[:e.start].count(b"\n") + 1, e) from None


def _not_utf8(path: Path, line: int, e: UnicodeDecodeError) -> DataError:
    return DataError(f"{path}:{line}: not UTF-8 text (byte 0x{e.object[e.start]:02x}); "
                     f"save {path.name} as UTF-8")


def read_class_list(path: Path) -> list[str]:
    if not path.exists():
        raise DataError(f"class list {str(path)!r} does not exist (one class name per line)")
    names = [line.strip() for line in _read_text(path, "class list").splitlines() if line.strip()]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DataError(f"class list {str(path)!r} repeats {dupes[:5]}")
    if not names:
        raise DataError(f"class list {str(path)!r} is empty")
    return names


def find_manifest(root: Path, split: str) -> Path:
    for ext in (".jsonl", ".csv"):
        if (root / f"{split}{ext}").exists():  # read_manifest refuses one that is not a file
            return root / f"{split}{ext}"
    raise DataError(f"no manifest {split}.jsonl or {split}.csv in {str(root)!r}")


def _labels(raw: object, index: dict[str, int], where: str) -> Target:
    if isinstance(raw, str):
        raw = [s for s in (part.strip() for part in raw.split(";")) if s]
    if not isinstance(raw, list):
        raise DataError(f"{where}: labels must be a list, got {raw!r}")
    out = set()
    for label in raw:
        if isinstance(label, int) and not isinstance(label, bool):
            if not 0 <= label < len(index):
                raise DataError(f"{where}: class index {label} is outside 0..{len(index) - 1}")
            out.add(label)
        elif isinstance(label, str) and label in index:
            out.add(index[label])
        else:
            raise DataError(f"{where}: unknown class {label!r} (not in the class list)")
    return tuple(sorted(out))


def _utf8_lines(path: Path, f) -> Iterator[str]:
    """The lines of a binary file as text, a ``DataError`` naming the line if one is not UTF-8."""
    for n, raw in enumerate(f, 1):
        try:
            yield raw.decode("utf-8-sig" if n == 1 else "utf-8")
        except UnicodeDecodeError as e:
            raise _not_utf8(path, n, e) from None


def _inside_root(p: str, where: str, root: Path) -> str:
    """``p`` (relative to ``root``) as a path, refused if it is absolute or leads out of root."""
    if os.path.isabs(p):
        raise DataError(f"{where}: path {p!r} is absolute; manifest paths must be relative to the "
                        f"data root {str(root)!r} and stay inside it (move or link the image there)")
    norm = os.path.normpath(p)
    if norm == os.pardir or norm.startswith(os.pardir + os.sep):
        raise DataError(f"{where}: path {p!r} leads outside the data root {str(root)!r}; manifest "
                        "paths must stay inside it (move or link the image there)")
    return str(root / p)


def read_manifest(path: Path, classes: list[str]) -> FileSource:
    """The images and label sets a manifest lists, every line checked."""
    index = {name: i for i, name in enumerate(classes)}
    base = path.parent
    rows: list[tuple[str, object, str]] = []
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise DataError(f"manifest {str(path)!r} is not a regular file; give a .jsonl or .csv "
                            "file")
        with open(path, "rb") as f:
            lines = _utf8_lines(path, f)
            if path.suffix == ".jsonl":
                for n, line in enumerate(lines, 1):
                    if not line.strip():
                        continue
                    try:
                        item = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise DataError(f"{path}:{n}: not valid JSON ({e})") from None
                    if not isinstance(item, dict) or "path" not in item or "labels" not in item:
                        raise DataError(f"{path}:{n}: expected an object with 'path' and 'labels'")
                    rows.append((str(item["path"]), item["labels"], f"{path}:{n}"))
            else:
                reader = csv.DictReader(lines)
                if not reader.fieldnames or not {"path", "labels"} <= set(reader.fieldnames):
                    raise DataError(f"{path}: the CSV header must name 'path' and 'labels' "
                                    f"columns, got {reader.fieldnames}")
                for rec in reader:
                    rows.append((rec["path"] or "", rec["labels"] or "", f"{path}:{reader.line_num}"))
    except csv.Error as e:
        raise DataError(f"{path}:{reader.line_num}: not valid CSV ({e})") from None
    except OSError as e:
        raise DataError(f"cannot read manifest {str(path)!r}: {e}") from None
    if not rows:
        raise DataError(f"manifest {str(path)!r} lists no images")
    paths, targets = [], []
    for p, raw, where in rows:
        if not p:
            raise DataError(f"{where}: empty path")
        paths.append(_inside_root(p, where, base))
        targets.append(_labels(raw, index, where))
    return FileSource(paths, targets)


def read_class_weights(spec: str, train_counts: np.ndarray) -> np.ndarray | None:
    """MAP@100's per-class weights: none, the training frequencies, or a file of numbers."""
    if not spec:
        return None
    if spec == "frequency":
        return train_counts.astype(np.float64)
    path = Path(spec)
    if not path.exists():
        raise DataError(f"data.class_weights: {spec!r} is neither 'frequency' nor a file")
    try:
        values = [float(v) for v in _read_text(path, "data.class_weights file").split()]
    except DataError:
        raise
    except ValueError as e:
        raise DataError(f"data.class_weights file {spec!r} is not a list of numbers: {e}") from None
    if len(values) != len(train_counts) or any(v < 0 for v in values):
        raise DataError(f"data.class_weights file {spec!r} must hold {len(train_counts)} "
                        f"non-negative numbers, got {len(values)}")
    return np.asarray(values)
