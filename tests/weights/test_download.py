"""The Keras ImageNet download: only with an explicit flag, MD5-checked, never half-written.

A file:// URL to a file the test creates stands in for Google's storage (no network here)."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest

from xception import WeightsError, WeightsNotFoundError
from xception.weights.download import KERAS_IMAGENET, fetch, resolve_remote


@pytest.fixture
def remote(tmp_path):
    src = tmp_path / "served" / "weights.h5"
    src.parent.mkdir()
    src.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 64)
    return src, hashlib.md5(src.read_bytes()).hexdigest()


def test_fetch_checks_md5_and_writes_atomically(remote, tmp_path):
    src, md5 = remote
    dest = tmp_path / "cache" / "w.h5"
    with pytest.raises(WeightsError, match="MD5"):
        fetch(src.as_uri(), dest, md5="0" * 32)
    assert not dest.parent.exists() or not any(dest.parent.iterdir())
    assert fetch(src.as_uri(), dest, md5=md5) == dest
    assert dest.read_bytes() == src.read_bytes()


def test_missing_source_fails_cleanly(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="cannot download"):
        fetch((tmp_path / "nope.h5").as_uri(), tmp_path / "out.h5")
    assert not (tmp_path / "out.h5").exists()


def test_no_download_without_the_flag(remote, tmp_path):
    src, md5 = remote
    with pytest.raises(WeightsNotFoundError, match="--download") as e:
        resolve_remote("keras:imagenet", download=False, url=src.as_uri(), directory=tmp_path)
    assert "curl -L -o xception_weights_tf_dim_ordering_tf_kernels.h5" in str(e.value)
    assert not any(tmp_path.glob("*.h5"))
    path = resolve_remote("keras:imagenet", download=True, url=src.as_uri(), md5=md5,
                          directory=tmp_path)
    assert path.name == KERAS_IMAGENET["keras:imagenet"].filename and path.exists()
    # a second call uses the cached copy, even without the flag
    assert resolve_remote("keras:imagenet", download=False, directory=tmp_path) == path


def test_official_urls_are_keras_own():
    assert KERAS_IMAGENET["keras:imagenet"].url == (
        "https://storage.googleapis.com/tensorflow/keras-applications/xception/"
        "xception_weights_tf_dim_ordering_tf_kernels.h5")
    assert KERAS_IMAGENET["keras:imagenet-notop"].url.endswith("_notop.h5")


def test_cli_refuses_to_download_without_flag(tmp_path):
    dst = tmp_path / "out.safetensors"
    r = subprocess.run([sys.executable, "-m", "xception", "convert", "keras:imagenet", str(dst),
                        "--cache-dir", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "--download" in r.stderr and "storage.googleapis.com" in r.stderr
    assert not dst.exists()
