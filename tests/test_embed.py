"""``xception embed``: the features it writes are the model's (``forward_head(forward_features(x),
pre_logits=True)`` for ``avg``) on the images as ``predict`` prepares them, named by file or by
data set index + label, in .safetensors or .npy + names file, streamed batch by batch."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import TINY, save_png
from safetensors import safe_open
from safetensors.torch import load_file
from weights_helpers import randomize_

import xception
from xception.cli import predict as cli_predict
from xception.cli.main import main
from xception.data import build_splits
from xception.data.preprocess import load_image
from xception.inference import POOLS, preprocess_of
from xception.inference.arrays import RowSpool, write_safetensors
from xception.inference.sources import SPLITS, named_section


def close(got: torch.Tensor, want: torch.Tensor) -> None:
    """Equal within 1e-5 of the features' scale (the embedding model has BatchNorm folded into
    its convs, which rounds differently from the plain model in the last bits)."""
    assert got.shape == want.shape
    scale = max(1.0, float(want.abs().max()))
    assert float((got - want).abs().max()) <= 1e-5 * scale, float((got - want).abs().max())
    assert float(want.std()) > 1e-3  # features that vary: a constant would compare too easily


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("embed")
    model = randomize_(xception.create_model("xception_small", **TINY, num_classes=3,
                                             min_input_size=8), size=24)
    weights = tmp / "w.safetensors"
    xception.save_weights(model, weights, class_names=["ant", "bee", "cat"],
                          preprocess={"image_size": 24, "in_chans": 3, "crop_fraction": 0.875})
    paths = []
    for i in range(7):  # different sizes: resized and centre-cropped as predict does
        paths.append(tmp / "in" / ("deep" if i % 2 else "") / f"{i}.png")
        save_png(paths[-1], i, size=16 + 3 * i)
    paths.sort(key=str)  # the folder's search order
    reference, meta = xception.load_model(weights)  # the plain eval-mode model
    with torch.no_grad():
        x = torch.stack([load_image(p, preprocess_of(meta)) for p in paths])
        features = reference.forward_features(x)
        pre_logits = reference.forward_head(features, pre_logits=True)
    return {"tmp": tmp, "weights": weights, "paths": paths, "features": features,
            "pre_logits": pre_logits}


def embed(capsys, *args) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(["embed", *map(str, args), "--device", "cpu"])
    out, err = capsys.readouterr()
    return rc, out, err


def test_avg_is_forward_head_pre_logits_in_file_order(setup, capsys):
    out = setup["tmp"] / "e.safetensors"
    rc, stdout, err = embed(capsys, setup["weights"], setup["tmp"] / "in", "--out", out,
                            "--batch-size", "3")
    assert rc == 0, err
    assert "found 7 image files" in err and "wrote" in stdout
    with safe_open(str(out), "pt") as f:
        names = json.loads(f.metadata()["names"])
        assert f.metadata()["pool"] == "avg" and set(f.keys()) == {"embeddings"}
        got = f.get_tensor("embeddings")
    assert names == [str(p) for p in setup["paths"]]
    close(got, setup["pre_logits"])


@pytest.mark.parametrize("pool", ["max", "none"])
def test_max_and_none_pooling_as_npy_with_names(setup, capsys, pool):
    out = setup["tmp"] / f"{pool}.npy"
    rc, _, err = embed(capsys, setup["weights"], *setup["paths"], "--out", out, "--pool", pool,
                       "--batch-size", "4")
    assert rc == 0, err
    got = torch.from_numpy(np.load(out))
    want = setup["features"].amax(dim=(2, 3)) if pool == "max" else setup["features"]
    close(got, want)
    names = (setup["tmp"] / f"{pool}.npy.names.txt").read_text().splitlines()
    assert names == [str(p) for p in setup["paths"]]


def test_unreadable_files_are_listed_left_out_and_exit_1(setup, capsys, tmp_path):
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image")
    out = tmp_path / "e.npy"
    rc, _, err = embed(capsys, setup["weights"], setup["paths"][0], bad, setup["paths"][1],
                       "--out", out)
    assert rc == 1 and f"cannot read {bad}: " in err and "exit status 1" in err
    assert np.load(out).shape == (2, setup["pre_logits"].shape[1])
    names = (tmp_path / "e.npy.names.txt").read_text().splitlines()
    assert names == [str(setup["paths"][0]), str(setup["paths"][1])]
    rc, _, err = embed(capsys, setup["weights"], bad, "--out", tmp_path / "none.safetensors")
    assert rc == 1 and not (tmp_path / "none.safetensors").exists()


def test_a_data_set_split_with_labels_and_indices(tmp_path, capsys):
    """The digits' validation split: labels and indices as the data set has them, features of the
    images as its evaluation prepares them."""
    model = randomize_(xception.create_model("xception_small", **TINY, num_classes=10, in_chans=1,
                                             min_input_size=8), size=16, in_chans=1)
    weights = tmp_path / "d.safetensors"
    names = [str(i) for i in range(10)]
    xception.save_weights(model, weights, class_names=names,
                          preprocess={"image_size": 16, "in_chans": 1})
    out = tmp_path / "digits.safetensors"
    rc, _, err = embed(capsys, weights, "digits", "--out", out, "--batch-size", "100")
    assert rc == 0, err
    tensors = load_file(out)
    _, meta = xception.load_model(weights)
    val = build_splits(named_section("digits", meta)).val
    assert tensors["labels"].tolist() == [int(t) for t in val.targets()]
    assert tensors["indices"].tolist() == val.indices.tolist()
    with safe_open(str(out), "pt") as f:
        assert json.loads(f.metadata()["class_names"]) == names
    picks = [0, 17, 358]
    with torch.no_grad():
        x = torch.stack([val[i][0] for i in picks])
        want = model.eval().forward_head(model.forward_features(x), pre_logits=True)
    close(tensors["embeddings"][picks], want)
    assert tensors["embeddings"].shape == (359, want.shape[1])
    rc, _, err = embed(capsys, weights, "digits", "--split", "test", "--out", tmp_path / "t.npy")
    assert rc == 2 and "has no test split" in err


def test_streamed_safetensors_are_read_by_the_safetensors_library(tmp_path):
    spool = RowSpool(str(tmp_path))
    blocks = [np.random.default_rng(i).standard_normal((n, 3, 2)).astype(np.float32)
              for i, n in enumerate((4, 1, 6))]
    for b in blocks:
        spool.append(b)
    labels = np.arange(11, dtype=np.int64) * 7
    write_safetensors(str(tmp_path / "s.safetensors"), {"embeddings": spool}, {"labels": labels},
                      {"k": "v"})
    spool.close()
    got = load_file(tmp_path / "s.safetensors")
    assert np.array_equal(got["embeddings"].numpy(), np.concatenate(blocks))
    assert np.array_equal(got["labels"].numpy(), labels)
    with safe_open(str(tmp_path / "s.safetensors"), "np") as f:
        assert f.metadata() == {"k": "v"}
    other = RowSpool(str(tmp_path))
    other.append(blocks[0])
    with pytest.raises(ValueError, match="rows shaped"):
        other.append(blocks[0][:, :2])
    other.close()


def test_the_cli_choices_are_the_library_s():
    assert cli_predict.POOLS == POOLS and cli_predict.SPLITS == SPLITS
