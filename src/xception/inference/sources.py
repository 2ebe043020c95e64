"""Which images ``eval --data`` and ``embed`` read: a named data set (its splits prepared as
training prepared them) or image files on disk (prepared as ``predict`` prepares them), and how
their class names line up with the weights'.

``--data`` for ``eval`` takes what ``xception train --data`` takes - a data set name, an
ImageFolder root (``train/`` + ``val/``: its ``val/`` is evaluated), a multi-label manifest
folder or file - and also a single folder of class folders (``ROOT/<class>/<images>``, e.g. a
test set kept apart from the training tree).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn
from torch.utils.data import Dataset

from ..config import RunConfig
from ..data.build import NAMED, Splits, build_splits
from ..data.datasets import ImageDataset, Target
from ..data.folders import find_manifest, read_class_list, read_manifest, scan_image_folder
from ..data.section import DataSection
from ..errors import ConfigError, DataError, WeightsError
from .inputs import ImageFiles
from .model import preprocess_of

SPLITS = ("train", "val", "test")


def _model_section(meta: dict) -> dict[str, Any]:
    # the saved model section too, so data.image_size is checked against that model's minimum
    return {"name": meta["model_name"], "overrides": meta.get("model_config", {})} \
        if "model_name" in meta else {}


def own_section(meta: dict, source: str = "the weights file") -> DataSection:
    """The data section the weights were trained with (their ``data_config``)."""
    if "data_config" not in meta:
        raise WeightsError(f"{source} does not say which data it was trained on (no data_config "
                           "in its metadata); name the data to evaluate on with --data")
    return RunConfig.from_dict({"model": _model_section(meta), "data": meta["data_config"]}).data


def named_section(name: str, meta: dict) -> DataSection:
    """The section of data set ``name``, without augmentation: the weights' own when they were
    trained on it (its root, split and held-out validation images), else the defaults at the
    weights' input size."""
    own = meta.get("data_config") or {}
    data = dict(own) if own.get("name") == name else \
        {"name": name, "image_size": preprocess_of(meta).image_size}
    data["augment"] = False
    return RunConfig.from_dict({"model": _model_section(meta), "data": data}).data


def check_channels(model: nn.Module, in_chans: int, what: str) -> None:
    want = getattr(model.config, "in_chans", in_chans)
    if in_chans != want:
        raise DataError(f"{what} has {in_chans}-channel images but the model takes {want} "
                        "channel(s); use data with the model's channels")


def split_of(splits: Splits, split: str, name: str) -> ImageDataset:
    if split not in SPLITS:
        raise ConfigError(f"split {split!r} is not valid; choose one of {list(SPLITS)}")
    if split == "test":
        if splits.test is None:
            raise DataError(f"{name} has no test split apart from its validation split (the "
                            "test images validate unless data.val_holdout holds some training "
                            "images out); use --split val")
        return splits.test
    return splits.train if split == "train" else splits.val


def _listing(names: list[str], limit: int = 12) -> str:
    shown = ", ".join(map(repr, names[:limit]))
    return f"[{shown}{', ...' if len(names) > limit else ''}] ({len(names)} in all)"


def match_classes(data_names: list[str], weight_names: list[str], what: str) -> list[int]:
    """The weights' index of each of the data's classes, by name; a ``DataError`` listing both
    sides when the data has a class the weights do not know."""
    index = {n: i for i, n in enumerate(weight_names)}
    unknown = [n for n in data_names if n not in index]
    if unknown:
        raise DataError(f"{what}: the class names do not match the weights': not in the weights: "
                        f"{_listing(unknown)}; the data's classes: {_listing(data_names)}; the "
                        f"weights' classes: {_listing(weight_names)}")
    return [index[n] for n in data_names]


class Relabel(Dataset):
    """A data set's items with their labels mapped to the weights' class indices."""

    def __init__(self, ds: Dataset, mapping: list[int]) -> None:
        self.ds, self.mapping = ds, mapping
        self.num_classes = getattr(ds, "num_classes", 0)
        self.multi_label = getattr(ds, "multi_label", False)

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> Any:
        item = self.ds[i]
        if not isinstance(item, tuple):  # a BadSample
            return item
        return item[0], self.mapping[item[1]]


@dataclass
class EvalData:
    """What ``eval`` runs over: items ``(image, weights' class index or indices)``."""

    dataset: Dataset
    description: str          # "digits val", "ImageFolder 'test/'"
    class_names: list[str]    # the data's own classes (all of them known to the weights)
    multi_label: bool = False
    class_weights: tuple[float, ...] | None = None


def eval_data(data: str | None, meta: dict, model: nn.Module, weight_names: list[str]) -> EvalData:
    """The validation images of ``data`` (None: the data the weights were trained on)."""
    if data is None or data in NAMED and not Path(data).exists():
        section = own_section(meta) if data is None else named_section(data, meta)
        splits = build_splits(section)
        what = f"{section.name} val"
        check_channels(model, splits.info.preprocess.in_chans, what)
        names = list(splits.info.class_names)
        ds: Dataset = splits.val
        if data is not None:
            mapping = match_classes(names, weight_names, f"--data {data}")
            ds = ds if mapping == list(range(len(mapping))) else Relabel(ds, mapping)
        return EvalData(ds, what, names, splits.info.multi_label, splits.info.class_weights)
    return _files_data(Path(data), meta, model, weight_names)


def _files_data(p: Path, meta: dict, model: nn.Module, weight_names: list[str]) -> EvalData:
    pre = preprocess_of(meta)
    what = f"--data {str(p)!r}"
    if p.is_file() and p.suffix in (".jsonl", ".csv"):
        return _manifest(p, read_class_list(p.parent / "classes.txt"), pre, weight_names, what)
    if not p.is_dir():
        raise DataError(f"{what} is not {', '.join(NAMED)}, a folder or a .jsonl/.csv manifest")
    if (p / "classes.txt").is_file():
        return _manifest(find_manifest(p, "val"), read_class_list(p / "classes.txt"), pre,
                         weight_names, what)
    root, split = (p, "val") if (p / "train").is_dir() and (p / "val").is_dir() else \
        (p.parent, p.name)  # an ImageFolder root, or one folder of class folders
    source, names = scan_image_folder(root, split)
    mapping = match_classes(names, weight_names, what)
    targets = [mapping[t] for t in source.targets]
    return EvalData(ImageFiles(source.paths, pre, targets), f"ImageFolder {str(root / split)!r}",
                    names)


def _manifest(path: Path, classes: list[str], pre: Any, weight_names: list[str],
              what: str) -> EvalData:
    mapping = match_classes(classes, weight_names, what)
    source = read_manifest(path, classes)
    targets: list[Target] = [tuple(sorted(mapping[c] for c in t)) for t in source.targets]
    ds = ImageFiles(source.paths, pre, targets, len(weight_names), multi_label=True)
    return EvalData(ds, f"manifest {str(path)!r}", classes, multi_label=True)
