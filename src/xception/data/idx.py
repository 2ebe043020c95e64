"""MNIST and Fashion-MNIST from their idx files: found offline, read with every size checked.

Where the four files are looked for, in order: ``data.root`` in torchvision's layout
(``ROOT/FashionMNIST/raw/`` or ``ROOT/MNIST/raw/``, also ``ROOT/`` itself); the folder a Debian
package installs them into (``apt-get install dataset-fashion-mnist`` puts them in
``/usr/share/datasets/fashion-mnist``); then, only with ``data.download=true``, torchvision's
downloader into ``data.root`` (or the cache folder). Each file may be gzipped or not. An idx file
states its element type and shape in its header; a wrong magic number, an element type other
than unsigned bytes, a shape other than the expected one, or a short file is a ``DataError``
naming the file.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from ..errors import DataError

FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "val": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
TORCHVISION_FOLDER = {"fashion-mnist": "FashionMNIST", "mnist": "MNIST"}
SYSTEM_DIRS = {"fashion-mnist": [Path("/usr/share/datasets/fashion-mnist")],
               "mnist": [Path("/usr/share/datasets/mnist")]}
APT_PACKAGE = {"fashion-mnist": "dataset-fashion-mnist", "mnist": "dataset-mnist"}
CLASS_NAMES = {
    "fashion-mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                      "Sneaker", "Bag", "Ankle boot"),
    "mnist": tuple(str(i) for i in range(10)),
}
_UBYTE = 0x08


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An idx file of unsigned bytes with ``ndim`` dimensions (gzipped or not), checked."""
    try:
        raw = Path(path).read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"cannot read idx file {str(path)!r}: {e}") from None
    header = 4 + 4 * ndim
    if len(raw) < header or raw[:2] != b"\x00\x00" or raw[2] != _UBYTE or raw[3] != ndim:
        found = raw[:4].hex() if len(raw) >= 4 else f"{len(raw)} bytes"
        raise DataError(f"{str(path)!r} is not an idx file of unsigned bytes with {ndim} "
                        f"dimension(s) (magic 0x000008{ndim:02x} expected, found 0x{found}); "
                        "is it the right file, and complete?")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    need = header + int(np.prod(shape))
    if len(raw) != need:
        raise DataError(f"idx file {str(path)!r} holds {len(raw) - header} data bytes, its header "
                        f"says {need - header} (shape {shape}): the file is truncated or damaged; "
                        "delete it and fetch it again")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def candidate_dirs(name: str, root: Path | None) -> list[Path]:
    dirs = []
    if root is not None:
        tv = root / TORCHVISION_FOLDER[name]
        dirs += [tv / "raw", tv, root]
    return dirs + SYSTEM_DIRS[name]


def locate(name: str, root: Path | None) -> dict[str, Path] | None:
    """The folder holding all four files (first match), as stem -> path; None if none does."""
    stems = [s for pair in FILES.values() for s in pair]
    for folder in candidate_dirs(name, root):
        found = {s: _find(folder, s) for s in stems}
        if all(found.values()):
            return found  # type: ignore[return-value]
    return None


def download(name: str, root: Path) -> None:
    """torchvision's downloader (checks the archives' MD5), into ``root/<TorchvisionName>/raw``."""
    from torchvision import datasets

    cls = datasets.FashionMNIST if name == "fashion-mnist" else datasets.MNIST
    try:
        cls(str(root), train=True, download=True)
    except Exception as e:  # noqa: BLE001 - network errors come in many types
        raise DataError(f"downloading {name} into {str(root)!r} failed: {e}") from None


def load_idx_dataset(name: str, root: Path | None, download_ok: bool, cache: Path
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train images (N, 28, 28) uint8, train labels, val images, val labels): the official
    60,000 / 10,000 split, the test set as validation."""
    files = locate(name, root)
    if files is None and download_ok:
        download(name, root or cache)
        files = locate(name, root or cache)
    if files is None:
        where = ", ".join(str(d) for d in candidate_dirs(name, root))
        raise DataError(
            f"{name} not found (looked in {where}); install it with `apt-get install "
            f"{APT_PACKAGE[name]}` (Debian), put the four idx files in --set data.root=DIR, or "
            "let torchvision download them with --set data.download=true")
    out = []
    for images, labels in FILES.values():
        x, y = read_idx(files[images], 3), read_idx(files[labels], 1)
        if x.shape[1:] != (28, 28) or len(x) != len(y):
            raise DataError(f"{str(files[images])!r} holds images of shape {x.shape[1:]} and "
                            f"{str(files[labels])!r} {len(y)} labels for {len(x)} images: "
                            f"expected 28x28 images, one label each")
        if y.size and int(y.max()) >= 10:
            raise DataError(f"{str(files[labels])!r} has label {int(y.max())}: expected 0-9")
        out += [x, y.astype(np.int64)]
    return out[0], out[1], out[2], out[3]
