"""The named datasets: scikit-learn's digits (embedded, no network) and CIFAR-10/100.

CIFAR is downloaded only on request (``data.download=true``) by torchvision, which checks the
archive's MD5, into a cache folder. Its batches are Python pickles; they are read here with an
unpickler that can build nothing but plain containers and numpy arrays, so a tampered file cannot
run code.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DataError


def split_indices(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, ...]:
    """A stratified split that depends only on the labels and the seed (stable across machines)."""
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"data.val_fraction must be in (0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_val = max(1, round(len(idx) * val_fraction))
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def holdout_indices(labels: np.ndarray, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(rest, held out): ``count`` images held out, stratified (each class in proportion,
    largest remainders rounded up), chosen by ``seed`` alone: the same split on every machine."""
    if not 0 < count < len(labels):
        raise DataError(f"data.val_holdout={count} must be between 1 and the {len(labels)} "
                        "training images")
    classes, sizes = np.unique(labels, return_counts=True)
    exact = sizes * count / len(labels)
    take = np.floor(exact).astype(int)
    take[np.argsort(take - exact, kind="stable")[:count - take.sum()]] += 1
    rng = np.random.default_rng(seed)
    rest, held = [], []
    for label, n in zip(classes, take, strict=True):
        idx = rng.permutation(np.flatnonzero(labels == label))
        held.append(idx[:n])
        rest.append(idx[n:])
    return np.sort(np.concatenate(rest)), np.sort(np.concatenate(held))


def read_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits: (1797, 8, 8) float images in 0..16 and their labels.

    Read straight from the CSV file that ships inside scikit-learn (what ``load_digits`` reads),
    without importing scikit-learn: that import alone is a sizeable part of a short run's
    start-up (as measured: benchmarks/RESULTS.md, "Figures moved out of code comments").
    Falls back to ``sklearn.datasets.load_digits`` if the file is not where it used to be.
    """
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            table = np.loadtxt(path, delimiter=",", dtype=np.float64)
            if table.shape == (1797, 65):
                return table[:, :64].reshape(-1, 8, 8), table[:, 64].astype(np.int64)
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images, digits.target


def to_unit_images(images: np.ndarray, image_size: int, top: float = 255.0) -> torch.Tensor:
    """(N, H, W) grayscale in 0..top as (N, 1, S, S) float32 in [-1, 1], resized bilinearly."""
    x = torch.from_numpy(np.asarray(images, dtype=np.float32)).unsqueeze(1) / top
    if image_size != x.shape[-1]:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    return (x * 2 - 1).clamp_(-1, 1)


def load_digits_images(image_size: int) -> tuple[torch.Tensor, np.ndarray]:
    """All digits as (N, 1, S, S) float images in [-1, 1] and their labels."""
    images, labels = read_digits()
    return to_unit_images(images, image_size, top=16.0), labels


# torchvision's on-disk layout of the two CIFAR archives
CIFAR_LAYOUT = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"],
                "batches.meta", b"labels", b"label_names"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "meta", b"fine_labels",
                 b"fine_label_names"),
}

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
}


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str):  # noqa: ANN201 (pickle's API)
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _read_batch(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            d = _ArraysOnly(f, encoding="bytes").load()
    except FileNotFoundError:
        raise DataError(f"CIFAR file {str(path)!r} is missing") from None
    except Exception as e:
        raise DataError(f"CIFAR file {str(path)!r} is not a CIFAR batch: {e}") from None
    if not isinstance(d, dict):
        raise DataError(f"CIFAR file {str(path)!r} is not a CIFAR batch (no dict inside)")
    return d


def default_cache_dir() -> Path:
    """``$XCEPTION_DATA`` or ``~/.cache/xception/data``: where downloads go unless data.root says."""
    return Path(os.environ.get("XCEPTION_DATA", Path.home() / ".cache" / "xception" / "data"))


def download_cifar(name: str, root: Path) -> None:
    """Fetch and MD5-check the archive with torchvision (network; only on request)."""
    from torchvision import datasets

    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    for train in (True, False):
        cls(str(root), train=train, download=True)


def load_cifar(name: str, root: Path, download: bool = False
               ) -> tuple[torch.Tensor, np.ndarray, torch.Tensor, np.ndarray, tuple[str, ...]]:
    """(train images, train labels, test images, test labels, class names); images (N, 3, 32, 32)
    uint8."""
    folder, train_files, test_files, meta_file, label_key, names_key = CIFAR_LAYOUT[name]
    base = root / folder
    if not base.is_dir():
        if not download:
            raise DataError(f"{name} is not in {str(base)!r}; add --set data.download=true to "
                            f"download it there (or point data.root at a folder that holds "
                            f"{folder}/)")
        download_cifar(name, root)

    def read(files: list[str]) -> tuple[torch.Tensor, np.ndarray]:
        xs, ys = [], []
        for fname in files:
            d = _read_batch(base / fname)
            if b"data" not in d or label_key not in d:
                raise DataError(f"CIFAR file {str(base / fname)!r} lacks 'data' or "
                                f"{label_key.decode()!r}")
            x = np.asarray(d[b"data"], dtype=np.uint8)
            if x.ndim != 2 or x.shape[1] != 3 * 32 * 32:
                raise DataError(f"CIFAR file {str(base / fname)!r}: data has shape {x.shape}, "
                                "expected (N, 3072)")
            xs.append(x.reshape(-1, 3, 32, 32))
            ys.append(np.asarray(d[label_key], dtype=np.int64))
        return torch.from_numpy(np.concatenate(xs)), np.concatenate(ys)

    x_train, y_train = read(train_files)
    x_test, y_test = read(test_files)
    meta = _read_batch(base / meta_file)
    names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in meta.get(names_key, []))
    n_classes = int(max(y_train.max(), y_test.max())) + 1
    if len(names) < n_classes:
        raise DataError(f"{str(base / meta_file)!r} names {len(names)} classes, the labels use "
                        f"{n_classes}")
    return x_train, y_train, x_test, y_test, names
