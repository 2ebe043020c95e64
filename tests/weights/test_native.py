import errno
from pathlib import Path

import pytest
import safetensors.torch
import torch

import xception
from xception import create_model, load_model, load_weights, save_weights
from xception.errors import OutputError, WeightsError, WeightsNotFoundError
from xception.weights import read_metadata
from xception.weights.native import load_native_model


def test_save_then_load_model_gives_identical_outputs(tiny, tmp_path):
    m = create_model("xception_small", residual=False, segments=2, **tiny).eval()
    with torch.no_grad():  # non-trivial BN statistics must travel too
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
    path = save_weights(m, tmp_path / "w.safetensors", class_names=list("abcdefghij"),
                        preprocess={"image_size": 16, "in_chans": 3, "mode": "minus_one_one"})
    loaded, meta = load_model(path)
    assert loaded.config == m.config
    assert meta["class_names"][0] == "a" and meta["arch"] == "xception"
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded(x), m(x))


def test_inception_v3_saves_and_reloads(tmp_path):
    m = create_model("inception_v3", width=0.125, num_classes=4, stem_stride=1, stem_pools=False,
                     stem_padding="symmetric", min_input_size=16, bn_momentum=0.05).eval()
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
    loaded, meta = load_model(save_weights(m, tmp_path / "w.safetensors"))
    assert meta["arch"] == "inception_v3" and loaded.config == m.config
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded(x), m(x))


def test_run_folder_resolves_to_its_weights(tiny, tmp_path):
    m = create_model("xception_small", **tiny)
    save_weights(m, tmp_path / "model.safetensors")
    assert read_metadata(tmp_path)["model_config"]["middle_repeats"] == 2
    assert isinstance(load_weights(create_model("xception_small", **tiny), tmp_path), xception.Xception)


def test_missing_weights(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        load_model(tmp_path / "nope.safetensors")


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupt_or_truncated_weights(tiny, tmp_path, damage):
    good = save_weights(create_model("xception_small", **tiny), tmp_path / "good.safetensors")
    bad = tmp_path / "bad.safetensors"
    data = good.read_bytes()
    bad.write_bytes({"garbage": b"\x00not a safetensors file" * 10,
                     "truncated": data[: len(data) // 2], "empty": b""}[damage])
    with pytest.raises(WeightsError, match="bad.safetensors"):
        load_model(bad)


def test_wrong_architecture_names_layer_and_both_shapes(tiny, tmp_path):
    path = save_weights(create_model("xception_small", **tiny), tmp_path / "small.safetensors")
    wide = create_model("xception_small", **{**tiny, "stem_channels": (8, 12)})
    with pytest.raises(WeightsError, match=r"layer 'stem.conv2.weight' has shape \(8, 8, 3, 3\) in "
                       r"the file but \(12, 8, 3, 3\) in the model"):
        load_weights(wide, path)
    with pytest.raises(WeightsError, match="missing key"):
        load_weights(create_model("xception_small", **{**tiny, "middle_repeats": 3}), path)


def test_failed_save_leaves_no_file_and_says_why(tiny, tmp_path, monkeypatch):
    real = Path.write_bytes

    def full_disk(self, data):
        real(self, data[:4])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full_disk)
    with pytest.raises(OutputError, match=r"cannot write .*w\.safetensors.*No space left on device"):
        save_weights(create_model("xception_small", **tiny), tmp_path / "w.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_native_loader_reads_project_files_only(tiny, tmp_path):
    m = create_model("xception_small", **tiny).eval()
    bare = tmp_path / "bare.safetensors"
    safetensors.torch.save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(bare))
    with pytest.raises(WeightsError, match="no xception model config"):
        load_native_model(bare)
    loaded, _ = load_model(bare, "xception_small", **tiny)  # the public loader reads any format
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded(x), m(x))
    native, meta = load_native_model(save_weights(m, tmp_path / "own.safetensors"))
    assert native.config == m.config and meta["format"] == "xception/1"
