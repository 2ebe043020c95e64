"""Bad data inputs, one table: each case builds its input in tmp_path and states the outcome.

An outcome is a one-line ``DataError`` (the fragments its message must hold: what, where, what to
do), the number of training images a correct run sees, or a check of the values read. Inputs that
used to hang (FIFOs) run under an alarm, so a regression fails the case instead of the suite.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import TINY, run_cli, save_png, write_manifest
from PIL import Image

from xception.config import DataSection
from xception.data import build_datasets
from xception.data.images import BadSample, read_image, to_8_bit
from xception.data.preprocess import Preprocess, load_image
from xception.errors import DataError

PRE = Preprocess(8, 3, crop_fraction=0.875)   # what an image-file run with image_size=8 saves


# ---- inputs -------------------------------------------------------------------------------------

def folder_tree(tmp: Path) -> Path:
    """ImageNet layout, classes a/b/c: 16 train images each (48), 2 val images each."""
    root = tmp / "data"
    for split, n in (("train", 16), ("val", 2)):
        for c, name in enumerate("abc"):
            for i in range(n):
                save_png(root / split / name / f"{i}.png", 100 * c + i + 50 * (split == "val"), size=8)
    return root


def link(path: Path, target: str | Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, path)


def tree_with(*links: tuple[str, str]) -> Callable[[Path], dict]:
    """An ImageFolder tree plus symbolic links (path in the tree, target; "{root}", "{tmp}" are
    filled in); an ``extra/`` folder of 4 images sits beside the tree, outside it."""
    def setup(tmp: Path) -> dict:
        root = folder_tree(tmp)
        for i in range(4):
            save_png(tmp / "extra" / f"{i}.png", 900 + i, size=8)
        for where, target in links:
            link(root / where, target.format(root=root, tmp=tmp))
        return {"name": "imagefolder", "root": str(root)}
    return setup


def tree_with_fifo(tmp: Path) -> dict:
    root = folder_tree(tmp)
    os.mkfifo(root / "train" / "a" / "x.jpg")
    return {"name": "imagefolder", "root": str(root)}


def ramp16(path: Path) -> np.ndarray:
    """A 16-bit grayscale PNG (Pillow mode "I;16") spanning 0..65535; returns its values."""
    v = np.linspace(0, 65535, 16 * 16).round().astype(np.uint16).reshape(16, 16)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(v).save(path)
    assert Image.open(path).mode == "I;16"
    return v


def tree_with_ramp16(tmp: Path) -> dict:
    root = folder_tree(tmp)
    v = ramp16(root / "val" / "a" / "0.png")
    # the same picture at 8 bits, scaled as it should be: value * 255 / 65535, rounded
    Image.fromarray(np.round(v.astype(np.float64) * 255 / 65535).astype(np.uint8)).save(tmp / "expected.png")
    return {"name": "imagefolder", "root": str(root)}


def manifest(rows: list[tuple[str, list]] | None = None, fmt: str = "jsonl",
             raw: dict[str, bytes] | None = None, **section: Any) -> Callable[[Path], dict]:
    """A manifest folder: classes sky/tree, img/0..3.png, train = ``rows`` (default: the 4
    images), val = the 4 images; ``raw`` files (name -> bytes, "{tmp}" filled in) replace any."""
    def setup(tmp: Path) -> dict:
        root = tmp / "jft"
        for i in range(4):
            save_png(root / "img" / f"{i}.png", i, size=8)
        (root / "classes.txt").write_text("sky\ntree\n")
        good = [(f"img/{i}.png", [["sky"], ["tree"], ["sky", "tree"], []][i]) for i in range(4)]
        write_manifest(root, "train", [(p.format(tmp=tmp), lab) for p, lab in rows or good], fmt)
        write_manifest(root, "val", good, fmt)
        for name, data in (raw or {}).items():
            (root / name).write_bytes(data.replace(b"{tmp}", str(tmp).encode()))
        return {"name": "manifest", "root": str(root),
                **{k: v.format(tmp=tmp) for k, v in section.items()}}
    return setup


def manifest_with_fifo(name: str, listed: str = "") -> Callable[[Path], dict]:
    def setup(tmp: Path) -> dict:
        kw = manifest([("img/0.png", ["sky"]), (listed, ["tree"])] if listed else None)(tmp)
        target = Path(kw["root"]) / name
        target.unlink(missing_ok=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.mkfifo(target)
        return kw
    return setup


def fifo(tmp: Path) -> Path:
    os.mkfifo(tmp / "x.jpg")
    return tmp / "x.jpg"


def link_to_device(tmp: Path) -> Path:
    link(tmp / "x.jpg", "/dev/zero")
    return tmp / "x.jpg"


def weights_and_fifo(tmp: Path) -> list[str]:
    from xception import create_model, save_weights

    w = save_weights(create_model("xception_small", **TINY), tmp / "w.safetensors",
                     class_names=[str(i) for i in range(10)], preprocess=PRE.to_dict())
    return [str(w), str(fifo(tmp))]


# ---- actions ------------------------------------------------------------------------------------

def build(kw: dict) -> tuple:
    """Datasets as ``xception train --data ...`` builds them (no training)."""
    return build_datasets(DataSection(image_size=8, **kw))


def predict(path: Path) -> torch.Tensor:
    """The image as ``xception predict`` prepares it."""
    return load_image(path, PRE)


def cli_predict(args: list[str]) -> Any:
    return run_cli("predict", *args, timeout=120)


# ---- outcome checks (called with the action's result and tmp_path) -------------------------------

def dangling_link_is_counted(result: tuple, tmp: Path) -> None:
    train, _, _ = result
    assert len(train) == 49
    bad = [train[i] for i in range(len(train)) if isinstance(train[i], BadSample)]
    assert [b.path for b in bad] == [str(tmp / "data" / "train" / "a" / "gone.png")]
    assert "does not exist" in bad[0].reason


def ramp16_reads_like_its_8_bit_version(result: tuple, tmp: Path) -> None:
    _, val, _ = result
    x_val, _ = val[0]                                     # the training/evaluation reader
    x_pred = load_image(tmp / "data" / "val" / "a" / "0.png", PRE)   # predict's reader
    expected = load_image(tmp / "expected.png", PRE)
    torch.testing.assert_close(x_val, expected, rtol=0, atol=0)
    torch.testing.assert_close(x_pred, expected, rtol=0, atol=0)
    assert (x_val == 1).float().mean() < 0.2              # clipped, it was 98% white


def bom_is_not_part_of_a_class_name(result: tuple, tmp: Path) -> None:
    _, _, info = result
    assert info.class_names == ("sky", "tree")


def fifo_in_manifest_is_counted_unreadable(result: tuple, tmp: Path) -> None:
    train, _, _ = result
    assert len(train) == 2 and isinstance(train[0], tuple)
    bad = train[1]
    assert isinstance(bad, BadSample) and bad.path.endswith("img/pipe.png")
    assert "FIFO" in bad.reason and "not a regular file" in bad.reason


def cli_lists_fifo_as_unreadable(proc: Any, tmp: Path) -> None:
    """predict lists an unreadable input (here a FIFO, never opened: it could block) with its
    reason, predicts the others (none here) and exits 1 (issue 27: not 2, a user error)."""
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    line = next(line for line in proc.stderr.splitlines() if "cannot read" in line)
    assert str(tmp / "x.jpg") in line and "FIFO" in line and "not a regular file" in line
    assert "predicted 0 of 1 images; 1 could not be read" in proc.stderr


# ---- the table ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    id: str
    setup: Callable[[Path], Any]     # builds the input in tmp_path, returns the action's argument
    action: Callable[[Any], Any]
    # str / tuple of str: a one-line DataError holding these; int: training images; callable: check
    expect: str | tuple[str, ...] | int | Callable[[Any, Path], None]


LATIN1 = "tr\xe9e".encode("latin-1")

CASES = [
    # 1. symbolic links in an ImageFolder tree: loops are refused, other links followed
    Case("loop-dot-in-class-folder", tree_with(("train/a/again", ".")), build,
         ("train/a/again' is a symbolic link to", "a loop", "remove the link")),
    Case("loop-link-to-split-folder", tree_with(("train/a/deep/up", "../..")), build,
         ("train/a/deep/up' is a symbolic link to", "a loop")),
    Case("loop-link-to-data-root", tree_with(("train/b/root", "{root}")), build,
         ("train/b/root' is a symbolic link to", "a loop")),
    Case("class-folder-links-to-split", tree_with(("train/d", ".")), build,
         ("train/d' is a symbolic link to", "holds the split folder itself")),
    Case("link-elsewhere-followed", tree_with(("train/a/more", "{tmp}/extra")), build, 48 + 4),
    Case("link-to-sibling-class-followed", tree_with(("train/a/b", "../b")), build, 48 + 16),
    Case("dangling-link-counted-as-unreadable", tree_with(("train/a/gone.png", "nowhere.png")),
         build, dangling_link_is_counted),
    # 2. 16-bit images are scaled to 8 bits, identically for training/evaluation and predict
    Case("png16-ramp-train-and-predict", tree_with_ramp16, build,
         ramp16_reads_like_its_8_bit_version),
    # 3. text files that are not UTF-8: one line naming the file and line
    Case("classes-txt-latin1", manifest(raw={"classes.txt": b"sky\n" + LATIN1 + b"\n"}), build,
         ("classes.txt:2: not UTF-8 text (byte 0xe9)", "save classes.txt as UTF-8")),
    Case("train-jsonl-latin1",
         manifest(raw={"train.jsonl": b'{"path": "img/0.png", "labels": []}\n{"path": "'
                       + LATIN1 + b'.png", "labels": []}\n'}), build,
         ("train.jsonl:2: not UTF-8 text", "save train.jsonl as UTF-8")),
    Case("train-csv-latin1",
         manifest(raw={"train.csv": b"path,labels\nimg/0.png,sky\n" + LATIN1 + b".png,sky\n"},
                  fmt="csv"), build, ("train.csv:3: not UTF-8 text", "save train.csv as UTF-8")),
    Case("class-weights-latin1", manifest(raw={"w.txt": b"1\n" + LATIN1 + b"\n"},
                                          class_weights="{tmp}/jft/w.txt"), build,
         "w.txt:2: not UTF-8 text"),
    Case("classes-txt-with-bom-ok", manifest(raw={"classes.txt": b"\xef\xbb\xbfsky\ntree\n"}),
         build, bom_is_not_part_of_a_class_name),
    # 4. manifest paths must stay inside the data root
    Case("jsonl-path-dotdot", manifest([("img/0.png", ["sky"]), ("../outside/secret.jpg", [])]),
         build, ("train.jsonl:2: path '../outside/secret.jpg' leads outside the data root",
                 "must stay inside it")),
    Case("jsonl-path-dotdot-in-the-middle",
         manifest([("img/../../outside/secret.jpg", ["sky"])]), build,
         ("train.jsonl:1: path 'img/../../outside/secret.jpg' leads outside",)),
    Case("csv-path-absolute",
         manifest([("img/0.png", ["sky"]), ("img/1.png", []), ("{tmp}/outside/secret.jpg", [])],
                  fmt="csv"), build,
         ("train.csv:4: path '", "/outside/secret.jpg' is absolute", "must be relative to the data root")),
    Case("dotdot-staying-inside-ok", manifest([("img/../img/0.png", ["sky"])]), build, 1),
    # 5. FIFOs and devices are refused before they are opened
    Case("predict-fifo", fifo, predict,
         ("x.jpg': it is a FIFO (named pipe), not a regular file", "give the path of an image file")),
    Case("predict-link-to-device", link_to_device, predict,
         "x.jpg': it is a character device, not a regular file"),
    Case("fifo-in-class-folder", tree_with_fifo, build, ("train/a/x.jpg' is not a regular file",
                                                         "remove it")),
    Case("fifo-listed-in-manifest", manifest_with_fifo("img/pipe.png", listed="img/pipe.png"), build,
         fifo_in_manifest_is_counted_unreadable),
    Case("classes-txt-is-fifo", manifest_with_fifo("classes.txt"), build,
         "classes.txt' is not a regular file"),
    Case("train-jsonl-is-fifo", manifest_with_fifo("train.jsonl"), build,
         "train.jsonl' is not a regular file"),
    Case("cli-predict-fifo", weights_and_fifo, cli_predict, cli_lists_fifo_as_unreadable),
]


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang("the case did not finish in 20 s (waiting on a FIFO?)")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_data_input(case: Case, tmp_path: Path) -> None:
    arg = case.setup(tmp_path)
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(150 if case.action is cli_predict else 20)   # the check reads files too
    try:
        if isinstance(case.expect, str | tuple):
            with pytest.raises(DataError) as err:
                case.action(arg)
            message = str(err.value)
            assert "\n" not in message
            for fragment in (case.expect,) if isinstance(case.expect, str) else case.expect:
                assert fragment in message, message
        elif isinstance(case.expect, int):
            assert len(case.action(arg)[0]) == case.expect
        else:
            case.expect(case.action(arg), tmp_path)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_wide_integer_images_scale_to_8_bits(tmp_path: Path) -> None:
    """value * 255 / 65535, rounded, for every 16-bit value; 32-bit "I" clipped to 0..65535 first."""
    v = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    got = np.asarray(to_8_bit(Image.fromarray(v)))
    np.testing.assert_array_equal(got, np.round(v.astype(np.float64) * 255 / 65535).astype(np.uint8))
    assert got.dtype == np.uint8 and got.min() == 0 and got.max() == 255
    probes = np.array([[0, 128, 129, 385, 386, 32767, 32768, 65535, -7, 70_000]], dtype=np.int32)
    assert np.asarray(to_8_bit(Image.fromarray(probes))).tolist() == [
        [0, 0, 1, 1, 2, 127, 128, 255, 0, 255]]
    rgb = Image.fromarray(np.full((2, 2, 3), 200, np.uint8))
    assert to_8_bit(rgb) is rgb                      # 8-bit images are left alone
    # through the file readers: a 16-bit PNG and a 32-bit integer TIFF
    ramp = ramp16(tmp_path / "ramp.png")
    Image.fromarray(ramp.astype(np.int32)).save(tmp_path / "ramp.tif")
    assert Image.open(tmp_path / "ramp.tif").mode == "I"
    want = np.round(ramp.astype(np.float64) * 255 / 65535).astype(np.uint8)
    for name in ("ramp.png", "ramp.tif"):
        im = read_image(str(tmp_path / name))
        assert im.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(im)[..., 1], want)
        gray = load_image(tmp_path / name, Preprocess(16, 1))   # predict's reader, 1 channel
        np.testing.assert_allclose(((gray[0] + 1) * 127.5).numpy(), want, atol=1e-3)
