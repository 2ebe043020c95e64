"""``xception predict`` on files and folders: streamed through a DataLoader in batches (memory does
not grow with the number of images), one CSV row / JSONL record per readable image, broken files
listed on stderr and counted, exit status 1 when any was; ``predict_files`` still returns a list."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY, cli_env, save_png
from weights_helpers import randomize_

import xception
from xception.cli.main import main
from xception.errors import DataError
from xception.inference import find_images, load_for_inference, predict_files, predict_stream
from xception.inference import inputs as inputs_module

NAMES = ["ant", "bee", "cat"]
MiB = 1 << 20


def write_weights(path: Path, size: int = 32) -> Path:
    """A tiny 3-class model (random, well-scaled weights: its predictions vary) reading images at
    ``size`` px."""
    model = randomize_(xception.create_model("xception_small", **TINY, num_classes=3,
                                             min_input_size=8), size=size)
    xception.save_weights(model, path, class_names=NAMES,
                          preprocess={"image_size": size, "in_chans": 3})
    return path


def images(folder: Path, n: int, seed: int = 0) -> list[Path]:
    paths = [folder / f"{i:05d}.png" for i in range(n)]
    for i, p in enumerate(paths):
        save_png(p, seed + i, size=16)
    return paths


def broken(folder: Path) -> list[Path]:
    """A truncated PNG and a text file named .jpg."""
    folder.mkdir(parents=True, exist_ok=True)
    save_png(folder / "truncated.png", 7, size=16)
    data = (folder / "truncated.png").read_bytes()
    (folder / "truncated.png").write_bytes(data[:len(data) // 2])
    (folder / "notes.jpg").write_text("this is not an image\n")
    return [folder / "truncated.png", folder / "notes.jpg"]


def cli(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main([*map(str, args), "--device", "cpu"])
    out, err = capsys.readouterr()
    return rc, out, err


# ---- memory --------------------------------------------------------------------------------------

# Runs in a fresh process: the model is loaded once (so the measurement is the predicting, not the
# loading), a 20-image run warms up imports and allocator, then /proc/self/clear_refs resets the
# peak RSS (VmHWM) and the real run's peak RSS growth is measured.
MEASURE = r"""
import json, sys
import torch
torch.set_num_threads(1)
import xception.inference as inference
from xception.cli.main import main

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024

weights, folder, warm, out = sys.argv[1:5]
loaded = inference.load_for_inference(weights, "cpu")
inference.load_for_inference = lambda *args, **kwargs: loaded
flags = ["--batch-size", "8", "--device", "cpu"]
main(["predict", weights, warm, "--out", out, *flags])
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
base = status("VmRSS:")
rc = main(["predict", weights, folder, "--out", out, *flags])
print(json.dumps({"rc": rc, "growth": status("VmHWM:") - base}))
"""


@pytest.fixture(scope="module")
def many(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("many")
    images(root / "warm", 20, seed=5000)
    images(root / "n200", 200)
    images(root / "n2000", 2000)
    return {"root": root, "weights": write_weights(root / "w.safetensors")}


def peak_growth(many: dict[str, Path], folder: str) -> int:
    out = many["root"] / f"{folder}.csv"
    r = subprocess.run([sys.executable, "-c", MEASURE, str(many["weights"]),
                        str(many["root"] / folder), str(many["root"] / "warm"), str(out)],
                       capture_output=True, text=True, env=cli_env(), timeout=300)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["rc"] == 0
    with open(out, newline="") as f:
        assert sum(1 for _ in f) == 1 + int(folder[1:])  # header + one row per image
    return result["growth"]


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc")
def test_peak_memory_does_not_grow_with_the_number_of_images(many):
    """2,000 vs 200 images (16x16 PNGs read at 32 px, batches of 8): the peak RSS growth of the
    2,000-image run is at most 1.5x the 200-image run's + 4 MiB (measured: about 1 MiB for both;
    the paths and rows themselves are a few hundred bytes an image). Holding the 2,000 prepared
    images alone would add 2,000 x 3 x 32 x 32 x 4 bytes = 23 MiB (measured with that bug: 24 MiB
    against 3 MiB); running them through the model at once, far more."""
    small, large = peak_growth(many, "n200"), peak_growth(many, "n2000")
    assert large <= 1.5 * small + 4 * MiB, (large / MiB, small / MiB)


def test_images_are_classified_batch_by_batch_as_they_are_read(tmp_path, weights, monkeypatch):
    """No image is read more than one batch ahead of the model (no worker processes): the
    stream cannot be collecting the inputs first, whatever memory figures say."""
    paths = images(tmp_path / "in", 25)
    model, meta, device = load_for_inference(weights, "cpu")
    events: list[str] = []
    real_load = inputs_module.load_image
    monkeypatch.setattr(inputs_module, "load_image",
                        lambda p, pre: events.append("read") or real_load(p, pre))
    model.register_forward_pre_hook(lambda *_: events.append("forward"))
    out = list(predict_stream(model, meta, paths, 2, device, batch_size=4))
    assert len(out) == 25 and events.count("forward") == 7
    for k, at in enumerate(i for i, e in enumerate(events) if e == "forward"):
        assert events[:at].count("read") <= 4 * (k + 1), events


# ---- rows, broken files, exit status ---------------------------------------------------------------

@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return write_weights(tmp_path_factory.mktemp("weights") / "w.safetensors")


@pytest.fixture
def mixed(tmp_path, weights) -> dict:
    """6 good images in nested folders (one .PNG), 2 broken ones, a .txt that is not searched."""
    good = images(tmp_path / "in" / "a", 3) + images(tmp_path / "in" / "b" / "c", 2, seed=10)
    save_png(tmp_path / "in" / "upper.PNG", 20, size=16)
    good.append(tmp_path / "in" / "upper.PNG")
    (tmp_path / "in" / "readme.txt").write_text("not an image file name: not searched")
    bad = broken(tmp_path / "in" / "b")
    return {"weights": weights, "good": good, "bad": bad,
            "folder": tmp_path / "in", "tmp": tmp_path}


def test_csv_one_row_per_readable_image_broken_files_listed_exit_1(mixed, capsys):
    out = mixed["tmp"] / "preds.csv"
    rc, stdout, err = cli(capsys, "predict", mixed["weights"], mixed["folder"], "--out", out,
                          "--top-k", "2", "--batch-size", "3")
    assert rc == 1, err
    assert "found 8 image files (8 in 1 folder)" in err
    for p in mixed["bad"]:
        assert f"cannot read {p}: " in err
    summary = err.strip().splitlines()[-1]
    assert "predicted 6 of 8 images" in summary and "2 could not be read" in summary
    assert "exit status 1" in summary
    assert f"wrote {out} (6 rows)" in stdout
    with open(out, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["path", "class_1", "probability_1", "class_2", "probability_2"]
    assert sorted(r[0] for r in rows[1:]) == sorted(map(str, mixed["good"]))
    model, meta, device = load_for_inference(mixed["weights"], "cpu")
    expected = dict(predict_files(model, meta, mixed["good"], 2, device, batch_size=1))
    seen = set()
    for path, c1, p1, c2, p2 in rows[1:]:
        (e1, q1), (e2, q2) = expected[path]
        assert (c1, c2) == (e1, e2) and c1 != c2
        assert abs(float(p1) - q1) <= 1e-5 and abs(float(p2) - q2) <= 1e-5
        assert float(p1) >= float(p2)
        seen.add(p2)
    assert len(seen) > 1  # the predictions vary from image to image: not a constant answer


def test_jsonl_and_stdout_all_readable_exit_0(mixed, capsys):
    for p in mixed["bad"]:
        p.unlink()
    out = mixed["tmp"] / "preds.jsonl"
    rc, stdout, err = cli(capsys, "predict", mixed["weights"], mixed["folder"], *mixed["good"][:1],
                          "--out", out, "--workers", "2")
    assert rc == 0, err
    assert "found 7 image files (6 in 1 folder, 1 given by name)" in err
    assert "predicted 7 images" in err.strip().splitlines()[-1]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 7 and [len(r["top"]) for r in records] == [3] * 7
    assert all(abs(sum(t["probability"] for t in r["top"]) - 1) < 1e-4 for r in records)
    rc, stdout, err = cli(capsys, "predict", mixed["weights"], *mixed["good"], "--top-k", "1")
    assert rc == 0
    lines = stdout.strip().splitlines()
    assert [line.split(": ")[0] for line in lines] == list(map(str, mixed["good"]))
    assert all(line.split(": ")[1].split(" (")[0] in NAMES for line in lines)


def test_nothing_readable_writes_nothing_exit_1(mixed, capsys):
    out = mixed["tmp"] / "preds.csv"
    rc, stdout, err = cli(capsys, "predict", mixed["weights"], *mixed["bad"], "--out", out)
    assert rc == 1 and not out.exists()
    assert "predicted 0 of 2 images; nothing written; 2 could not be read" in err


@pytest.mark.parametrize("args, message", [
    (["missing.png"], "input '{tmp}/missing.png' does not exist"),
    (["empty"], "no image files in '{tmp}/empty'"),
    (["in", "--out", "preds.txt"], "end the file name with .csv or .jsonl"),
])
def test_user_errors_exit_2_and_write_nothing(mixed, capsys, args, message):
    (mixed["tmp"] / "empty").mkdir()
    args = [str(mixed["tmp"] / a) if not a.startswith("--") else a for a in args]
    rc, stdout, err = cli(capsys, "predict", mixed["weights"], *args)
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert message.format(tmp=mixed["tmp"]) in err
    assert not (mixed["tmp"] / "preds.txt").exists()


def test_predict_files_returns_a_list_batch_by_batch_and_fails_on_a_broken_file(mixed):
    model, meta, device = load_for_inference(mixed["weights"], "cpu")
    one = predict_files(model, meta, mixed["good"], 3, device, batch_size=1)
    many = predict_files(model, meta, [str(p) for p in mixed["good"]], 3, device, batch_size=4)
    assert isinstance(many, list) and [p for p, _ in many] == list(map(str, mixed["good"]))
    for (_, a), (_, b) in zip(one, many, strict=True):
        assert [c for c, _ in a] == [c for c, _ in b]
        assert max(abs(x - y) for (_, x), (_, y) in zip(a, b, strict=True)) <= 1e-5
    with pytest.raises(DataError, match="cannot read image .*notes.jpg"):
        predict_files(model, meta, [*mixed["good"], mixed["bad"][1]], 3, device)


def test_folder_search_follows_links_once_and_takes_named_files_as_given(tmp_path):
    images(tmp_path / "top" / "sub", 2)
    os.symlink("..", tmp_path / "top" / "sub" / "up")   # a loop back up: searched once
    os.symlink(tmp_path / "top" / "sub", tmp_path / "top" / "again")  # the same folder again
    (tmp_path / "named.dat").write_bytes(b"x")  # named: taken whatever its extension
    found = find_images([tmp_path / "top", tmp_path / "named.dat"])
    names = [os.path.relpath(p, tmp_path) for p in found.paths]
    assert len(names) == 3 and names[-1] == "named.dat"
    assert found.describe() == "3 image files (2 in 1 folder, 1 given by name)"
    assert torch.tensor([n.endswith(".png") for n in names[:2]]).all()
