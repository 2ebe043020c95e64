"""Datasets on trees the tests write: ImageFolder, manifests, a fake CIFAR, broken files, samplers."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import huge_png_header, save_png, write_broken_files, write_manifest

from xception.config import RunConfig, apply_overrides
from xception.data import (
    EvalBatches,
    TrainBatches,
    build_datasets,
    make_loader,
    resolve_data_arg,
    split_indices,
)
from xception.data.images import BadSample, read_image
from xception.errors import DataError


def data_cfg(*sets: str):
    return apply_overrides(RunConfig(), list(sets)).data


def drain(ds, batch=5, workers=0):
    xs, ys, bad = [], [], []
    for b in make_loader(ds, batch, num_workers=workers):
        bad += b.bad
        if b.x is not None:
            xs.append(b.x)
            ys.append(b.y)
    return torch.cat(xs), torch.cat(ys), bad


def test_read_image_skips_every_kind_of_broken_file(tmp_path):
    for path in write_broken_files(tmp_path):
        out = read_image(str(path))
        assert isinstance(out, BadSample) and out.path == str(path), path
    # between 1x and 2x Pillow's limit Pillow only warns; that counts as unreadable too
    huge_png_header(tmp_path / "big.png", side=10_000)
    assert "DecompressionBomb" in read_image(str(tmp_path / "big.png")).reason
    save_png(tmp_path / "ok.png", 1)
    assert read_image(str(tmp_path / "ok.png")).size == (20, 20)


def test_image_folder_with_broken_files(image_folder):
    broken = write_broken_files(image_folder / "train" / "bee")
    cfg = data_cfg("data.name=imagefolder", f"data.root={image_folder}", "data.image_size=16")
    train, val, info = build_datasets(cfg)
    assert info.class_names == ("ant", "bee", "cat") and not info.multi_label
    assert len(train) == 24 + 4 and len(val) == 9
    x, y, bad = drain(train)
    assert x.shape == (24, 3, 16, 16) and x.min() >= -1 and x.max() <= 1
    assert sorted(y.tolist()) == [0] * 8 + [1] * 8 + [2] * 8
    assert sorted(p for p, _ in bad) == sorted(str(p) for p in broken)
    xv, yv, badv = drain(val)
    assert xv.shape == (9, 3, 16, 16) and not badv


def test_predict_preprocessing_repeats_the_validation_transform(image_folder):
    """A non-square photo is centre-cropped for predict exactly as for validation."""
    from PIL import Image

    from xception.data.preprocess import Preprocess, load_image

    path = image_folder / "val" / "ant" / "0.png"
    rng = np.random.default_rng(7)
    Image.fromarray(rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)).save(path)
    cfg = data_cfg("data.name=imagefolder", f"data.root={image_folder}", "data.image_size=16",
                   "data.crop_fraction=0.8")
    _, val, info = build_datasets(cfg)
    assert info.preprocess.crop_fraction == 0.8
    x_val, _ = val[0]
    x_pred = load_image(path, info.preprocess)
    assert x_pred.shape == (3, 16, 16)
    torch.testing.assert_close(x_pred, x_val)
    whole = load_image(path, Preprocess(16, 3))  # the whole image squashed: a different input
    assert (whole - x_val).abs().max() > 0.1
    with pytest.raises(DataError, match="crop_fraction"):
        Preprocess(16, 3, crop_fraction=1.5)


def test_image_folder_errors(tmp_path, image_folder):
    with pytest.raises(DataError, match="does not exist"):
        build_datasets(data_cfg("data.name=imagefolder", f"data.root={tmp_path}"))
    save_png(image_folder / "val" / "dog" / "0.png", 7)
    with pytest.raises(DataError, match="classes the training split lacks"):
        build_datasets(data_cfg("data.name=imagefolder", f"data.root={image_folder}"))


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_manifest_multi_label_with_broken_files(tmp_path, fmt):
    root = tmp_path / "jft"
    root.mkdir()
    (root / "classes.txt").write_text("sky\ntree\ncar\n\n")
    for i in range(6):
        save_png(root / "img" / f"{i}.png", i)
    broken = write_broken_files(root / "img")
    rows = [(f"img/{i}.png", labels) for i, labels in
            enumerate([["sky"], ["sky", "tree"], ["car"], [], ["tree", "car"], ["sky", "car"]])]
    rows += [(f"img/{p.name}", ["sky"]) for p in broken]
    write_manifest(root, "train", rows, fmt)
    write_manifest(root, "val", rows[:3], fmt)
    cfg = data_cfg(*[f"data.{k}={v}" for k, v in resolve_data_arg(str(root)).items()],
                   "data.image_size=16", "data.class_weights=frequency")
    train, val, info = build_datasets(cfg)
    assert info.multi_label and info.class_names == ("sky", "tree", "car")
    # frequency weights count every listed image (broken ones too): sky 3 + 4, tree 2, car 3
    assert info.class_weights == (7.0, 2.0, 3.0)
    x, y, bad = drain(train, batch=4)
    assert x.shape == (6, 3, 16, 16) and len(bad) == 4
    assert y.tolist() == [[1, 0, 0], [1, 1, 0], [0, 0, 1], [0, 0, 0], [0, 1, 1], [1, 0, 1]]


@pytest.mark.parametrize("rows, text, message", [
    ([("a.png", ["boat"])], None, "unknown class 'boat'"),
    ([("a.png", [7])], None, "outside 0..1"),
    (None, '{"path": "a.png", "labels": ["sky"]}\n{not json\n', r"train.jsonl:2: not valid JSON"),
    (None, '["a.png"]\n', "expected an object"),
])
def test_manifest_errors_name_the_line(tmp_path, rows, text, message):
    (tmp_path / "classes.txt").write_text("sky\ntree\n")
    if rows is not None:
        write_manifest(tmp_path, "train", rows, "jsonl")
    else:
        (tmp_path / "train.jsonl").write_text(text)
    write_manifest(tmp_path, "val", [("a.png", ["sky"])], "jsonl")
    with pytest.raises(DataError, match=message):
        build_datasets(data_cfg("data.name=manifest", f"data.root={tmp_path}"))


def test_manifest_csv_needs_header(tmp_path):
    (tmp_path / "classes.txt").write_text("sky\n")
    (tmp_path / "train.csv").write_text("file,tags\na.png,sky\n")
    (tmp_path / "val.csv").write_text("path,labels\na.png,sky\n")
    with pytest.raises(DataError, match="'path' and 'labels'"):
        build_datasets(data_cfg("data.name=manifest", f"data.root={tmp_path}"))


def write_fake_cifar(root: Path, per_batch: int = 4) -> None:
    """torchvision's CIFAR-10 layout, pickled like the real (Python 2 era) files."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def dump(name, d):
        with open(folder / name, "wb") as f:
            pickle.dump(d, f, protocol=2)

    for i in range(1, 6):
        dump(f"data_batch_{i}", {b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                                 b"labels": [int(v) for v in rng.integers(0, 10, per_batch)]})
    dump("test_batch", {b"data": rng.integers(0, 256, (3, 3072), dtype=np.uint8),
                        b"labels": [1, 2, 3]})
    dump("batches.meta", {b"label_names": [f"c{i}".encode() for i in range(10)]})


def test_cifar_from_a_fake_tree(tmp_path):
    write_fake_cifar(tmp_path)
    train, val, info = build_datasets(data_cfg("data.name=cifar10", f"data.root={tmp_path}"))
    assert len(train) == 20 and len(val) == 3 and info.num_classes == 10
    assert info.class_names[3] == "c3"
    xt, _, _ = drain(train.select(range(6)))  # random-resized crop + flip on uint8 tensors
    assert xt.shape == (6, 3, 32, 32) and xt.min() >= -1 and xt.max() <= 1
    xv, yv, _ = drain(val)
    assert yv.tolist() == [1, 2, 3] and xv.shape == (3, 3, 32, 32)
    # evaluation keeps the whole 32 px image: the first pixel maps back exactly
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "rb") as f:
        raw = pickle.load(f)[b"data"]
    assert torch.allclose((xv[0, 0, 0, 0] + 1) / 2 * 255, torch.tensor(float(raw[0, 0])), atol=1e-3)


def test_cifar_refuses_code_in_pickles_and_says_how_to_download(tmp_path):
    with pytest.raises(DataError, match="data.download=true"):
        build_datasets(data_cfg("data.name=cifar10", f"data.root={tmp_path}"))
    write_fake_cifar(tmp_path)

    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    with open(tmp_path / "cifar-10-batches-py" / "data_batch_2", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": []}, f)
    with pytest.raises(DataError, match="refusing to load builtins.print"):
        build_datasets(data_cfg("data.name=cifar10", f"data.root={tmp_path}"))


def test_resolve_data_arg(tmp_path, image_folder):
    assert resolve_data_arg("cifar100") == {"name": "cifar100"}
    assert resolve_data_arg(str(image_folder)) == {"name": "imagefolder", "root": str(image_folder)}
    m = write_manifest(tmp_path / "m", "trainset", [("a.png", [])], "csv")
    assert resolve_data_arg(str(m)) == {"name": "manifest", "root": str(m.parent),
                                        "train_split": "trainset"}
    with pytest.raises(DataError, match="neither"):
        resolve_data_arg(str(tmp_path))


def test_augmentation_is_a_function_of_seed_epoch_index(image_folder):
    cfg = data_cfg("data.name=imagefolder", f"data.root={image_folder}", "data.image_size=16")
    train, _, _ = build_datasets(cfg, seed=3)
    a, b = train[(2, 5)][0], train[(2, 5)][0]
    assert torch.equal(a, b)
    assert not torch.equal(a, train[(3, 5)][0])                     # another epoch, another crop
    sampler = TrainBatches(len(train), 8, seed=3)
    sampler.set_epoch(4)
    one = [bt.x for bt in make_loader(train, 8, batch_sampler=sampler)]
    two = [bt.x for bt in make_loader(train, 8, batch_sampler=sampler, num_workers=2)]
    assert all(torch.equal(p, q) for p, q in zip(one, two, strict=True))


def test_train_batches_split_like_accumulation_and_resume():
    n, batch = 106, 12
    single = TrainBatches(n, batch, world=1, rank=0, accum=4, seed=5)
    ranks = [TrainBatches(n, batch, world=2, rank=r, accum=2, seed=5) for r in range(2)]
    for s in (single, *ranks):
        s.set_epoch(2)
    one = list(single)
    per_rank = [list(r) for r in ranks]
    assert single.steps_per_epoch == 9 and len(one) == 36  # 8 full steps + 10 left over (>= 2*4)
    for t in range(single.steps_per_epoch):
        # step t: rank r's micro a is block r*2 + a of the same global batch
        blocks = [per_rank[r][t * 2 + a] for r in range(2) for a in range(2)]
        assert blocks == one[t * 4:(t + 1) * 4]
    keys = [k for mb in one for k in mb]
    assert len(set(keys)) == n and {e for e, _ in keys} == {2}
    single.set_epoch(2, start_step=5)
    assert list(single) == one[5 * 4:]
    single.set_epoch(3)
    assert [k for mb in single for k in mb] != keys                 # a new order each epoch
    small = TrainBatches(13, 12, world=1, rank=0, accum=1)
    assert small.steps_per_epoch == 1 and small.epoch_samples == 12  # 1 left over: dropped


def test_eval_batches_cover_each_image_once():
    shards = [[i for b in EvalBatches(11, 3, world=3, rank=r) for i in b] for r in range(3)]
    assert sorted(sum(shards, [])) == list(range(11))


def test_split_is_fixed_stratified_and_disjoint():
    train, val, info = build_datasets(RunConfig().data)
    assert len(train) + len(val) == 1797 and len(val) == 359
    assert info.num_classes == 10 and info.preprocess.in_chans == 1
    labels = torch.arange(10).repeat_interleave(50).numpy()
    t1, v1 = split_indices(labels, 0.2, 0)
    t2, v2 = split_indices(labels, 0.2, 0)
    assert (v1 == v2).all() and not set(t1) & set(v1)
    assert all((labels[v1] == c).sum() == 10 for c in range(10))
    x, _ = val[0]
    assert x.shape == (1, 32, 32) and x.min() >= -1 and x.max() <= 1
