"""Fashion-MNIST / MNIST from idx files the tests write: every source, every refusal."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch
from idx_helpers import write_idx, write_set

import xception.data.idx as idx
from xception.config import RunConfig, apply_overrides
from xception.data import build_datasets, resolve_data_arg
from xception.errors import DataError


@pytest.fixture(autouse=True)
def no_system_copy(monkeypatch, tmp_path):
    """The tests never read a copy the machine may have installed (apt's dataset package)."""
    monkeypatch.setattr(idx, "SYSTEM_DIRS", {k: [tmp_path / "absent"] for k in idx.SYSTEM_DIRS})


def cfg(*sets: str):
    return apply_overrides(RunConfig(), list(sets)).data


@pytest.mark.parametrize("name,folder", [("fashion-mnist", "FashionMNIST/raw"),
                                         ("mnist", "MNIST/raw"), ("fashion-mnist", "")])
def test_reads_torchvisions_layout_or_a_plain_folder(tmp_path, name, folder):
    data = write_set(tmp_path / folder if folder else tmp_path)
    train, val, info = build_datasets(cfg(f"data.name={name}", f"data.root={tmp_path}",
                                          "data.augment=false"))
    assert (len(train), len(val)) == (12, 6)
    assert info.class_names == idx.CLASS_NAMES[name] and info.preprocess.in_chans == 1
    image, label = val[3]
    assert image.shape == (1, 32, 32) and label == 3
    # pixel 0..255 -> [-1, 1] after a bilinear resize 28 -> 32: a 28 px run sees the bytes exactly
    train28, _, _ = build_datasets(cfg(f"data.name={name}", f"data.root={tmp_path}",
                                       "data.augment=false", "data.image_size=28"))
    expected = torch.from_numpy(data["train"][0][5].astype(np.float32)) / 255 * 2 - 1
    assert torch.allclose(train28[5][0][0], expected, atol=1e-6)


def test_reads_the_system_folder_and_uncompressed_files(tmp_path, monkeypatch):
    system = tmp_path / "usr-share"
    write_set(system, compress=False)
    monkeypatch.setattr(idx, "SYSTEM_DIRS", {"fashion-mnist": [system], "mnist": [system]})
    train, val, _ = build_datasets(cfg("data.name=fashion-mnist"))
    assert (len(train), len(val)) == (12, 6)
    assert resolve_data_arg("fashion-mnist") == {"name": "fashion-mnist"}
    assert resolve_data_arg("mnist") == {"name": "mnist"}


def test_missing_names_the_apt_package_and_the_download_flag(tmp_path):
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist.*data.download=true"):
        build_datasets(cfg("data.name=fashion-mnist", f"data.root={tmp_path}"))


def test_download_only_on_request(tmp_path, monkeypatch):
    calls = []

    def fake_download(name, root):
        calls.append((name, root))
        write_set(root / "MNIST" / "raw")

    monkeypatch.setattr(idx, "download", fake_download)
    with pytest.raises(DataError, match="not found"):
        build_datasets(cfg("data.name=mnist", f"data.root={tmp_path}"))
    assert calls == []
    train, _, _ = build_datasets(cfg("data.name=mnist", f"data.root={tmp_path}",
                                     "data.download=true"))
    assert calls == [("mnist", tmp_path)] and len(train) == 12


def test_damaged_files_are_refused_by_name(tmp_path):
    write_set(tmp_path)
    images = tmp_path / (idx.FILES["train"][0] + ".gz")
    raw = gzip.decompress(images.read_bytes())
    images.write_bytes(gzip.compress(raw[:-100]))  # truncated
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz.*truncated"):
        build_datasets(cfg("data.name=fashion-mnist", f"data.root={tmp_path}"))
    images.write_bytes(gzip.compress(b"\x00\x00\x0d\x03" + raw[4:]))  # float elements
    with pytest.raises(DataError, match="not an idx file of unsigned bytes"):
        build_datasets(cfg("data.name=fashion-mnist", f"data.root={tmp_path}"))
    images.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(DataError, match="cannot read idx file"):
        build_datasets(cfg("data.name=fashion-mnist", f"data.root={tmp_path}"))
    # labels that do not match the images
    write_set(tmp_path)
    write_idx(tmp_path / idx.FILES["val"][1], np.arange(5))
    with pytest.raises(DataError, match="5 labels for 6 images"):
        build_datasets(cfg("data.name=fashion-mnist", f"data.root={tmp_path}"))
    write_idx(tmp_path / idx.FILES["val"][1], np.full(6, 12))
    with pytest.raises(DataError, match="label 12"):
        build_datasets(cfg("data.name=fashion-mnist", f"data.root={tmp_path}"))
