"""Image files on disk: an ImageFolder tree (ImageNet layout) or a multi-label manifest (JFT-style).

ImageFolder: ``ROOT/train/<class>/*.jpg`` and ``ROOT/val/<class>/*.jpg``; classes are the sorted
folder names of ``train/`` (torchvision's ``ImageFolder`` scans the tree).

Manifest: ``ROOT/classes.txt`` (one class name per line) and ``ROOT/train.jsonl`` / ``val.jsonl``
(one ``{"path": "...", "labels": ["cat", "dog"]}`` per line) or ``train.csv`` / ``val.csv`` (a
header with ``path`` and ``labels`` columns, labels separated by ``;``). Paths are relative to
ROOT unless absolute; labels are class names (JSONL may also give integer class indices).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from ..errors import DataError
from .datasets import FileSource, Target


def scan_image_folder(root: Path, split: str, classes: list[str] | None = None
                      ) -> tuple[FileSource, list[str]]:
    """The files of ``root/split`` and the class list (the given one, or the folder names)."""
    from torchvision.datasets import ImageFolder

    folder = root / split
    if not folder.is_dir():
        raise DataError(f"ImageFolder split {str(folder)!r} does not exist; expected "
                        f"{str(root)}/{{train,val}}/<class>/<image files>")
    try:
        tree = ImageFolder(str(folder), allow_empty=True)
    except (FileNotFoundError, OSError) as e:
        raise DataError(f"cannot read the ImageFolder tree {str(folder)!r}: {e}") from None
    if not tree.samples:
        raise DataError(f"{str(folder)!r} holds no image files in class sub-folders")
    if classes is None:
        return FileSource([p for p, _ in tree.samples], [c for _, c in tree.samples]), tree.classes
    unknown = sorted(set(tree.classes) - set(classes))
    if unknown:
        raise DataError(f"{str(folder)!r} has classes the training split lacks: {unknown[:5]}")
    index = {name: i for i, name in enumerate(classes)}
    return FileSource([p for p, _ in tree.samples],
                      [index[tree.classes[c]] for _, c in tree.samples]), classes


def read_class_list(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"class list {str(path)!r} does not exist (one class name per line)")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DataError(f"class list {str(path)!r} repeats {dupes[:5]}")
    if not names:
        raise DataError(f"class list {str(path)!r} is empty")
    return names


def find_manifest(root: Path, split: str) -> Path:
    for ext in (".jsonl", ".csv"):
        if (root / f"{split}{ext}").is_file():
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


def read_manifest(path: Path, classes: list[str]) -> FileSource:
    """The images and label sets a manifest lists, every line checked."""
    index = {name: i for i, name in enumerate(classes)}
    base = path.parent
    rows: list[tuple[str, object, str]] = []
    try:
        with open(path, newline="") as f:
            if path.suffix == ".jsonl":
                for n, line in enumerate(f, 1):
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
                reader = csv.DictReader(f)
                if not reader.fieldnames or not {"path", "labels"} <= set(reader.fieldnames):
                    raise DataError(f"{path}: the CSV header must name 'path' and 'labels' "
                                    f"columns, got {reader.fieldnames}")
                for n, rec in enumerate(reader, 2):
                    rows.append((rec["path"] or "", rec["labels"] or "", f"{path}:{n}"))
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read manifest {str(path)!r}: {e}") from None
    if not rows:
        raise DataError(f"manifest {str(path)!r} lists no images")
    paths, targets = [], []
    for p, raw, where in rows:
        if not p:
            raise DataError(f"{where}: empty path")
        paths.append(str(p if Path(p).is_absolute() else base / p))
        targets.append(_labels(raw, index, where))
    return FileSource(paths, targets)


def read_class_weights(spec: str, train_counts: np.ndarray) -> np.ndarray | None:
    """MAP@100's per-class weights: none, the training frequencies, or a file of numbers."""
    if not spec:
        return None
    if spec == "frequency":
        return train_counts.astype(np.float64)
    path = Path(spec)
    try:
        values = [float(v) for v in path.read_text().split()]
    except FileNotFoundError:
        raise DataError(f"data.class_weights: {spec!r} is neither 'frequency' nor a file") from None
    except (OSError, ValueError) as e:
        raise DataError(f"data.class_weights file {spec!r} is not a list of numbers: {e}") from None
    if len(values) != len(train_counts) or any(v < 0 for v in values):
        raise DataError(f"data.class_weights file {spec!r} must hold {len(train_counts)} "
                        f"non-negative numbers, got {len(values)}")
    return np.asarray(values)
