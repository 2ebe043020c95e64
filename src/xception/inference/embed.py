"""Pre-logit features (embeddings) of image files or of a data set's split, batch by batch, written
as they come (``arrays.RowSpool``): memory stays that of a few batches, whatever the count.

Pooling: ``avg`` is exactly ``model.forward_head(model.forward_features(x), pre_logits=True)`` (the
classifier's input: global average pool, then any FC layers), ``max`` the global max over the
feature map, ``none`` the feature map itself (N, C, H, W).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from ..data.build import build_splits
from ..data.images import BadSample
from ..errors import ConfigError
from ..files import atomic_write, atomic_write_text, printable
from .arrays import RowSpool, write_npy, write_safetensors
from .inputs import ImageFiles, NothingRead, Positions, batches, output_format
from .model import preprocess_of
from .sources import check_channels, named_section, split_of

POOLS = ("avg", "max", "none")
FORMATS = (".safetensors", ".npy")


def pooled_features(model: nn.Module, x: torch.Tensor, pool: str = "avg") -> torch.Tensor:
    """The features of ``x`` pooled by ``pool`` (see the module doc)."""
    if pool not in POOLS:
        raise ConfigError(f"pool={pool!r} is not valid; choose one of {list(POOLS)}")
    features = model.forward_features(x)
    if pool == "avg":
        return model.forward_head(features, pre_logits=True)
    return features.amax(dim=(2, 3)) if pool == "max" else features


def embed_stream(model: nn.Module, dataset: Dataset, pool: str = "avg",
                 device: torch.device | None = None, batch_size: int = 64,
                 num_workers: int = 0) -> Iterator[tuple[np.ndarray, list[int]] | BadSample]:
    """(float32 features, positions in ``dataset``) per batch, in order; unreadable items come as
    ``BadSample``s. ``dataset``'s items are ``(image, position)`` (``ImageFiles``, ``Positions``)."""
    device = device or next(model.parameters()).device
    for batch in batches(dataset, batch_size, num_workers):
        yield from (BadSample(path, reason) for path, reason in batch.bad)
        if batch.x is None:
            continue
        with torch.inference_mode():  # not held across the yield
            rows = pooled_features(model, batch.x.to(device), pool).float().cpu().contiguous()
        yield rows.numpy(), batch.y.tolist()


@dataclass
class EmbedInputs:
    """What to embed, and what each row is: a file, or a data set image with its label."""

    dataset: Dataset                       # items (image, position) or BadSample
    description: str
    names: list[str] | None = None         # files: the path of each position
    labels: list[int] | None = None        # data sets: the label of each position
    indices: list[int] | None = None       # data sets: the image's index in its data set
    class_names: list[str] | None = None   # data sets: their class names


def file_inputs(paths: Sequence[str], meta: dict) -> EmbedInputs:
    """Image files, prepared as ``predict`` prepares them."""
    return EmbedInputs(ImageFiles(paths, preprocess_of(meta)), f"{len(paths)} image files",
                       names=list(paths))


def dataset_inputs(name: str, split: str, meta: dict, model: nn.Module) -> EmbedInputs:
    """Split ``split`` of data set ``name``, prepared as its evaluation prepares it (no
    augmentation); the weights' own data config when they were trained on it."""
    section = named_section(name, meta)
    splits = build_splits(section)
    check_channels(model, splits.info.preprocess.in_chans, name)
    ds = split_of(splits, split, name)
    return EmbedInputs(Positions(ds), f"{name} {split}", labels=[int(t) for t in ds.targets()],
                       indices=[int(i) for i in ds.indices],
                       class_names=list(splits.info.class_names))


def embedding_format(path: str | Path) -> str:
    return output_format(path, FORMATS, "embeddings are written as safetensors or NumPy")


def _line(text: str) -> str:
    return printable(text).replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")


def write_embeddings(path: str | Path,
                     stream: Iterable[tuple[np.ndarray, list[int]] | BadSample],
                     inputs: EmbedInputs, metadata: dict[str, str] | None = None
                     ) -> tuple[list[Path], tuple[int, ...]]:
    """Write the rows of ``stream`` as they come, then, atomically: ``.safetensors`` with tensors
    ``embeddings`` (+ ``labels`` and ``indices`` for a data set) and the file names (or class
    names) as JSON in the metadata; or ``.npy`` + ``PATH.names.txt`` (one path per line, or
    ``index<TAB>label<TAB>class`` for a data set). Returns the files written and the shape."""
    fmt = embedding_format(path)
    path = Path(path)
    meta = {"format": "xception-embeddings", "source": inputs.description, **(metadata or {})}
    written: list[Path] = []
    shape: tuple[int, ...] = ()

    def write(tmp: str) -> None:
        nonlocal shape
        spool = RowSpool(str(Path(tmp).parent))
        order: list[int] = []
        try:
            for item in stream:
                if isinstance(item, BadSample):  # reported by whoever made the stream
                    continue
                rows, positions = item
                spool.append(rows)
                order += positions
            if not order:
                raise NothingRead(f"none of the images could be read; {str(path)!r} not written")
            shape = spool.shape
            if fmt == ".npy":
                write_npy(tmp, spool)
                written.append(atomic_write_text(Path(f"{path}.names.txt"), _names_text(inputs, order)))
                return
            arrays = {}
            if inputs.labels is not None:
                arrays["labels"] = np.asarray([inputs.labels[p] for p in order], dtype=np.int64)
                arrays["indices"] = np.asarray([inputs.indices[p] for p in order], dtype=np.int64)
                meta["class_names"] = json.dumps(inputs.class_names)
            else:
                meta["names"] = json.dumps([printable(inputs.names[p]) for p in order])
            write_safetensors(tmp, {"embeddings": spool}, arrays, meta)
        finally:
            spool.close()

    written.insert(0, atomic_write(path, write))
    return written, shape


def _names_text(inputs: EmbedInputs, order: list[int]) -> str:
    if inputs.labels is None:
        return "".join(_line(inputs.names[p]) + "\n" for p in order)
    names = inputs.class_names or []
    return "".join(f"{inputs.indices[p]}\t{inputs.labels[p]}\t{_line(names[inputs.labels[p]])}\n"
                   for p in order)
