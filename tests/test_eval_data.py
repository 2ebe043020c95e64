"""``xception eval --data``: weights evaluated on other data than they were trained on (a folder of
class folders, an ImageFolder root's val/, a named data set), classes matched by name, per-class
accuracy and a confusion matrix (CSV, PNG) equal to what the model's own predictions give."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from conftest import TINY, save_png
from weights_helpers import randomize_

import xception
from xception.cli.main import main
from xception.data import build_splits
from xception.errors import DataError
from xception.inference import evaluate_data, load_for_inference, predict_files
from xception.inference.sources import named_section

NAMES = ["ant", "bee", "cat"]


def tree(root, counts: dict[str, int], seed: int) -> dict[str, list]:
    """``root/<class>/<i>.png`` for each class: varied sizes, seeded pixels."""
    out = {}
    for c, (name, n) in enumerate(counts.items()):
        out[name] = []
        for i in range(n):
            out[name].append(root / name / f"{i}.png")
            save_png(out[name][-1], seed + 100 * c + i, size=14 + 2 * i)
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """Weights whose metadata says they were trained on the ImageFolder ``train_root`` (as a run
    folder's do), and a separate folder of class folders to evaluate them on."""
    tmp = tmp_path_factory.mktemp("eval")
    tree(tmp / "train_root" / "train", {n: 2 for n in NAMES}, 0)
    tree(tmp / "train_root" / "val", {n: 2 for n in NAMES}, 50)
    model = randomize_(xception.create_model("xception_small", **TINY, num_classes=3,
                                             min_input_size=8), size=24)
    weights = tmp / "w.safetensors"
    xception.save_weights(
        model, weights, class_names=NAMES,
        preprocess={"image_size": 24, "in_chans": 3, "crop_fraction": 0.875},
        extra={"data_config": {"name": "imagefolder", "root": str(tmp / "train_root"),
                               "image_size": 24}})
    # another folder: "bee" and "cat" only, in folders whose sorted order is not the weights'
    other = tree(tmp / "other", {"bee": 4, "cat": 5}, 1000)
    return {"tmp": tmp, "weights": weights, "other": other}


def expected_confusion(weights, by_class: dict[str, list]) -> np.ndarray:
    """The confusion matrix from the model's own top-1 predictions, image by image."""
    model, meta, device = load_for_inference(weights, "cpu")
    conf = np.zeros((3, 3), dtype=np.int64)
    for name, paths in by_class.items():
        for _, top in predict_files(model, meta, paths, 1, device, batch_size=1):
            conf[NAMES.index(name), NAMES.index(top[0][0])] += 1
    return conf


def test_eval_on_another_folder_matches_the_model_s_predictions(trained, capsys):
    want = expected_confusion(trained["weights"], trained["other"])
    out = trained["tmp"] / "report"
    capsys.readouterr()
    rc = main(["eval", str(trained["weights"]), "--data", str(trained["tmp"] / "other"),
               "--out", str(out), "--batch-size", "4", "--device", "cpu"])
    stdout, err = capsys.readouterr()
    assert rc == 0, err
    top1 = np.trace(want) / want.sum()
    assert f"ImageFolder '{trained['tmp'] / 'other'}' (9 images): top-1 {100 * top1:.2f}%" in stdout
    assert "no images of 1 of the weights' 3 classes: ant" in stdout
    table = {line.split()[0]: line.split()[1:] for line in stdout.splitlines()
             if line.startswith("           ")}
    assert table == {"bee": ["4", str(want[1, 1]), f"{100 * want[1, 1] / 4:.2f}%"],
                     "cat": ["5", str(want[2, 2]), f"{100 * want[2, 2] / 5:.2f}%"]}
    with open(out / "confusion_matrix.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["true \\ predicted", *NAMES]
    assert [r[0] for r in rows[1:]] == NAMES
    assert np.array_equal(np.array([[int(v) for v in r[1:]] for r in rows[1:]]), want)
    with open(out / "per_class.csv", newline="") as f:
        assert [r[:3] for r in csv.reader(f)] == [
            ["class", "images", "correct"], ["bee", "4", str(want[1, 1])],
            ["cat", "5", str(want[2, 2])]]
    png = (out / "confusion_matrix.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000


def test_the_python_api_and_an_imagefolder_root_s_val_split(trained):
    report = evaluate_data(trained["weights"], str(trained["tmp"] / "train_root"), 3, "cpu")
    assert report.data == f"ImageFolder '{trained['tmp'] / 'train_root' / 'val'}'"
    assert report.metrics["count"] == 6 and report.confusion.sum(axis=1).tolist() == [2, 2, 2]
    val = {n: sorted((trained["tmp"] / "train_root" / "val" / n).iterdir()) for n in NAMES}
    assert np.array_equal(report.confusion, expected_confusion(trained["weights"], val))
    own = evaluate_data(trained["weights"], None, 3, "cpu")  # the data it was trained on
    assert own.data == "imagefolder val" and np.array_equal(own.confusion, report.confusion)


def test_class_names_that_do_not_match_are_refused_naming_both_sides(trained, capsys, tmp_path):
    tree(tmp_path / "zoo", {"ant": 1, "dog": 1}, 7)
    capsys.readouterr()
    rc = main(["eval", str(trained["weights"]), "--data", str(tmp_path / "zoo"),
               "--out", str(tmp_path / "report"), "--device", "cpu"])
    _, err = capsys.readouterr()
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert "the class names do not match the weights'" in err
    assert "not in the weights: ['dog']" in err
    assert "the data's classes: ['ant', 'dog']" in err
    assert "the weights' classes: ['ant', 'bee', 'cat']" in err
    assert not (tmp_path / "report").exists()
    with pytest.raises(DataError, match="is not digits"):
        evaluate_data(trained["weights"], str(tmp_path / "nowhere"), 3, "cpu")


def test_a_named_data_set_with_the_weights_classes_in_another_order(tmp_path):
    """Digits on weights whose class names run 9..0: labels are mapped by name."""
    names = [str(i) for i in range(9, -1, -1)]
    model = randomize_(xception.create_model("xception_small", **TINY, num_classes=10, in_chans=1,
                                             min_input_size=8), size=16, in_chans=1)
    weights = tmp_path / "d.safetensors"
    xception.save_weights(model, weights, class_names=names,
                          preprocess={"image_size": 16, "in_chans": 1})
    report = evaluate_data(weights, "digits", 128, "cpu")
    _, meta = xception.load_model(weights)
    val = build_splits(named_section("digits", meta)).val
    x = torch.stack([val[i][0] for i in range(len(val))])
    with torch.no_grad():
        pred = model.eval()(x).argmax(1)
    true = torch.tensor([names.index(str(t)) for t in val.targets()])
    want = torch.zeros(10, 10, dtype=torch.int64).index_put_((true, pred), torch.tensor(1),
                                                             accumulate=True)
    assert report.data == "digits val" and report.metrics["count"] == 359
    assert np.array_equal(report.confusion, want.numpy())
    assert len(set(pred.tolist())) > 1  # the predictions vary
