"""Shared helpers: tiny models that train in a fraction of a second, and image trees on disk."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

# Without a GPU the Triton kernels are checked under Triton's CPU interpreter. Triton reads the
# flag when it is first imported (torchvision imports it), so it is set here, before any test
# module is collected. Models run PyTorch ops unless they were fused for the kernels.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# The block structure of xception_small (14 modules, 3-conv middle blocks) at a fraction of its
# width and with 2 middle repeats: every code path, a few thousand parameters.
TINY = dict(stem_channels=(8, 8), entry_channels=(16, 16, 32), middle_channels=32,
            middle_repeats=2, exit_channels=(32, 64), final_channels=(64, 64))


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


@pytest.fixture
def tiny() -> dict:
    return dict(TINY)


@pytest.fixture
def one_thread():
    """Tiny models on a shared 2-core machine: one thread avoids waiting on a busy second core."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


SRC = str(Path(__file__).resolve().parents[1] / "src")

# xception_small's 14-module layout at a few channels (a few thousand parameters), 16 px
# inputs. The stem has 8 channels, not 4: xception.workarounds.ONEDNN_MIN_CONV_CHANNELS (a
# torch 2.14.1 oneDNN heap corruption in the weight gradient of a channels_last 1x1 stride-2
# conv with fewer input channels, one thread, AMD EPYC); block2's shortcut is one.
TINY_MODEL = ["model.stem_channels=[8,8]", "model.entry_channels=[8,8]", "model.middle_channels=8",
              "model.middle_repeats=1", "model.exit_channels=[8,8]", "model.final_channels=[8,16]"]
TINY_RUN = [*TINY_MODEL, "data.image_size=16", "train.threads=1", "train.progress=false"]


def cli_env() -> dict[str, str]:
    """The environment for `python -m xception` subprocesses: this worktree's sources first."""
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def run_cli(*args: str, timeout: float = 300, check: bool = False) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "xception", *args], capture_output=True, text=True,
                          env=cli_env(), timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def wait_for_checkpoint(proc: subprocess.Popen, out: Path, timeout: float = 240) -> None:
    """Until ``out`` holds a checkpoint, while the run in ``proc`` is still going."""
    from xception.training.checkpoint import CHECKPOINT

    deadline = time.monotonic() + timeout
    while not (out / CHECKPOINT).exists():
        assert proc.poll() is None, f"the run ended early: {proc.communicate()}"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.01)


def save_png(path: Path, seed: int, size: int = 20, mode: str = "RGB") -> None:
    rng = np.random.default_rng(seed)
    shape = (size, size, 3) if mode == "RGB" else (size, size)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)


def save_jpeg(path: Path, seed: int, size: int = 24) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, "JPEG")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    return buf.getvalue()


def huge_png_header(path: Path, side: int = 100_000) -> None:
    """A valid PNG signature + IHDR claiming side x side pixels (a decompression bomb header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def write_broken_files(folder: Path) -> list[Path]:
    """The four kinds of broken image the data code must skip and count."""
    folder.mkdir(parents=True, exist_ok=True)
    empty = folder / "empty.jpg"
    empty.write_bytes(b"")
    truncated = folder / "truncated.jpg"
    data = save_jpeg(truncated, 99)
    truncated.write_bytes(data[:len(data) // 2])
    text = folder / "notes.jpg"
    text.write_text("this is not an image\n")
    bomb = folder / "bomb.png"
    huge_png_header(bomb)
    return [empty, truncated, text, bomb]


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """ImageNet layout, 3 classes: train/ 8 good images each, val/ 3 each; no broken files."""
    root = tmp_path / "imagenet"
    for split, n in (("train", 8), ("val", 3)):
        for c, name in enumerate(("ant", "bee", "cat")):
            for i in range(n):
                save_png(root / split / name / f"{i}.png", 100 * c + i + (0 if split == "train" else 50))
    return root


def write_manifest(root: Path, split: str, rows: list[tuple[str, list]], fmt: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        path = root / f"{split}.jsonl"
        path.write_text("".join(json.dumps({"path": p, "labels": lab}) + "\n" for p, lab in rows))
    else:
        path = root / f"{split}.csv"
        path.write_text("path,labels\n" + "".join(f"{p},{';'.join(map(str, lab))}\n"
                                                  for p, lab in rows))
    return path
