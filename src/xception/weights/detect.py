"""Which weights format a file holds (from its bytes, not its name), and reading torch files safely.

Formats: the project's safetensors (``xception/1`` metadata), other safetensors state dicts, Keras
HDF5 (Keras 2 ``.h5`` and Keras 3 ``.weights.h5``), Keras 3 ``.keras`` archives, and PyTorch files
(``.pth``/``.bin``, zip or legacy). PyTorch files are read with ``weights_only=True`` only: a file
that needs anything but tensors and plain containers is refused, never executed.
"""

from __future__ import annotations

import json
import pickle
import struct
import zipfile
from pathlib import Path

import torch

from ..errors import WeightsError

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
ZIP_MAGIC = b"PK\x03\x04"

# wrappers training scripts put around a state dict
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "module", "net")


def sniff(path: Path) -> str:
    """One of "safetensors", "hdf5", "keras_zip", "torch_zip", "torch_pickle"."""
    with open(path, "rb") as f:
        head = f.read(16)
    size = path.stat().st_size
    if not head:
        raise WeightsError(f"{str(path)!r} is empty")
    if head.startswith(HDF5_MAGIC):
        return "hdf5"
    if head.startswith(ZIP_MAGIC):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError) as e:
            raise WeightsError(f"{str(path)!r} is a damaged zip archive ({e}); "
                               "is it truncated?") from None
        if "model.weights.h5" in names:
            return "keras_zip"
        if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
            return "torch_zip"
        raise WeightsError(f"{str(path)!r} is a zip archive but neither a .keras file nor a "
                           f"PyTorch checkpoint (entries: {names[:5]})")
    # safetensors before the pickle marker: a header length whose low byte is 0x80 (one file in
    # 256) starts a safetensors file with the same byte as a pickle
    if len(head) >= 9 and head[8:9] == b"{":  # a pickle has no "{" there (PyTorch's: 0xf9)
        (n,) = struct.unpack("<Q", head[:8])
        if 8 + n <= size:
            return "safetensors"
        if head[:1] != b"\x80":
            raise WeightsError(f"{str(path)!r} is a truncated safetensors file (header says "
                               f"{8 + n} bytes, the file has {size})")
    if head[:1] == b"\x80":  # pickle protocol marker: PyTorch's legacy (pre-1.6) format
        return "torch_pickle"
    raise WeightsError(f"{str(path)!r} is not a weights format xception reads (safetensors, "
                       "Keras .h5/.weights.h5/.keras, PyTorch .pth/.bin)")


def safetensors_metadata(path: Path) -> dict[str, str]:
    """The raw metadata of a safetensors file (empty when there is none)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise WeightsError(f"{str(path)!r} has a damaged safetensors header ({e})") from None
    return header.get("__metadata__") or {}


def _unwrap(obj: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict):
        for key in _WRAPPER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, dict) and inner and \
                    all(isinstance(v, torch.Tensor) for v in inner.values()):
                obj = inner
                break
    if not isinstance(obj, dict) or not obj:
        raise WeightsError(f"{str(path)!r} holds a {type(obj).__name__}, not a state dict")
    state = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not state or not all(isinstance(k, str) for k in state):
        raise WeightsError(f"{str(path)!r} holds no named tensors (keys: {list(obj)[:5]})")
    if all(k.startswith("module.") for k in state):  # saved from DataParallel/DDP
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def read_torch(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a ``.pth``/``.bin`` file, loaded with ``weights_only=True``."""
    try:
        # a file object, so torch.load cannot pick a loader from the file name
        with open(path, "rb") as f:
            obj = torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightsError(
            f"{str(path)!r} needs more than tensors to load ({first}); refusing to unpickle it "
            "(weights_only=True). Re-save just the state dict, or as safetensors") from None
    except Exception as e:  # torch raises many types for a damaged file; all mean the same here
        why = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise WeightsError(f"{str(path)!r} is a damaged PyTorch file ({why}); "
                           "is it truncated?") from None
    return _unwrap(obj, path)
