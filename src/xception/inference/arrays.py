"""Writing a large array that arrives in row blocks, without holding it in memory: the rows go to
an unnamed temporary file as they come, and the output (safetensors or .npy) is written from it
once the row count is known."""

from __future__ import annotations

import json
import shutil
import struct
import tempfile
from collections.abc import Mapping
from typing import IO

import numpy as np

SAFETENSORS_DTYPES = {np.dtype(np.float32): "F32", np.dtype(np.int64): "I64"}


class RowSpool:
    """Row blocks of one shape and dtype, appended to a temporary file in ``folder`` (gone when
    closed, or when the process dies)."""

    def __init__(self, folder: str) -> None:
        self.file: IO[bytes] = tempfile.TemporaryFile(dir=folder, prefix=".rows-")  # noqa: SIM115
        self.rows = 0
        self.row_shape: tuple[int, ...] | None = None
        self.dtype: np.dtype | None = None

    def append(self, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block)
        if self.row_shape is None:
            self.row_shape, self.dtype = tuple(block.shape[1:]), block.dtype
        elif tuple(block.shape[1:]) != self.row_shape or block.dtype != self.dtype:
            raise ValueError(f"rows shaped {block.shape[1:]} ({block.dtype}) after "
                             f"{self.row_shape} ({self.dtype})")
        self.file.write(block.tobytes())
        self.rows += len(block)

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.rows, *(self.row_shape or ()))

    @property
    def nbytes(self) -> int:
        self.file.flush()
        return self.file.tell()

    def copy_to(self, f: IO[bytes]) -> None:
        self.file.flush()
        self.file.seek(0)
        shutil.copyfileobj(self.file, f, 1 << 20)

    def close(self) -> None:
        self.file.close()


def write_safetensors(path: str, spooled: Mapping[str, RowSpool],
                      arrays: Mapping[str, np.ndarray], metadata: Mapping[str, str]) -> None:
    """A safetensors file of the spooled tensors then the in-memory ``arrays`` (the format: an
    8-byte little-endian header length, a JSON header padded to 8 bytes, the raw C-order data)."""
    header: dict[str, object] = {"__metadata__": dict(metadata)}
    offset = 0
    entries = [(name, s.dtype, s.shape, s.nbytes) for name, s in spooled.items()]
    entries += [(name, a.dtype, a.shape, a.nbytes) for name, a in arrays.items()]
    for name, dtype, shape, nbytes in entries:
        header[name] = {"dtype": SAFETENSORS_DTYPES[np.dtype(dtype)], "shape": list(shape),
                        "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for s in spooled.values():
            s.copy_to(f)
        for a in arrays.values():
            f.write(np.ascontiguousarray(a).tobytes())


def write_npy(path: str, spool: RowSpool) -> None:
    """A .npy file (format 1.0 header) of the spooled rows."""
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {
            "descr": np.lib.format.dtype_to_descr(spool.dtype), "fortran_order": False,
            "shape": spool.shape})
        spool.copy_to(f)
