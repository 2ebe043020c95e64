"""timm parity: random timm ``legacy_xception`` and aligned ``xception41/65/71`` weights, imported,
give timm's outputs (<= 1e-5), from every torch/safetensors layout, Cadene's included."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from weights_helpers import images, max_diff, randomize_

from xception import WeightsError, create_model, load_model, load_weights

timm = pytest.importorskip("timm")

TOL = 1e-5
SIZE = 96  # TF "same" pads two of the max-pools asymmetrically here, timm does not
ALIGNED_SIZE = 72  # the aligned models pad symmetrically in both libraries


def _save(state: dict, path, fmt: str) -> None:
    if fmt == "safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)


@pytest.fixture(scope="module")
def legacy():
    model = randomize_(timm.create_model("legacy_xception"), size=SIZE)
    x = images(1, SIZE)
    with torch.no_grad():
        return model.state_dict(), x, model(x)


def _cadene(state: dict) -> dict:
    """Cadene's naming (last_linear), tstandley's 2-D pointwise kernels, a training wrapper."""
    out = {}
    for k, v in state.items():
        k = k.replace("fc.", "last_linear.") if k.startswith("fc.") else k
        out["module." + k] = v[:, :, 0, 0] if k.endswith("pointwise.weight") else v
    return {"state_dict": out, "epoch": 3}


@pytest.mark.parametrize("fmt", ["pth", "safetensors", "cadene"])
def test_legacy_xception_matches_timm(legacy, tmp_path, fmt):
    state, x, want = legacy
    path = tmp_path / ("w.bin" if fmt == "cadene" else f"w.{fmt}")
    _save(_cadene(state) if fmt == "cadene" else state, path, fmt)
    model = create_model("xception")  # built with Keras numerics: the import switches them
    load_weights(model, path)
    assert (model.config.padding, model.config.bn_eps) == ("symmetric", 1e-5)
    with torch.no_grad():
        got = model.eval()(x)
    assert want.std() > 0.1
    assert max_diff(got, want) <= TOL


def test_legacy_comparison_fails_with_keras_numerics(legacy, tmp_path):
    """Sensitivity: keeping TF padding and eps 1e-3 must miss timm's outputs by far."""
    state, x, want = legacy
    torch.save(state, tmp_path / "w.pth")
    model = create_model("xception")
    load_weights(model, tmp_path / "w.pth", numerics="keep")
    with torch.no_grad():
        assert max_diff(model.eval()(x), want) > 1000 * TOL


@pytest.mark.parametrize("name, kw, fmt", [
    ("xception41", {"output_stride": 8}, "pth"),
    ("xception65", {"output_stride": 16}, "safetensors"),
    ("xception71", {}, "bin"),
])
def test_aligned_matches_timm(tmp_path, name, kw, fmt):
    theirs = randomize_(timm.create_model(name, **kw), size=ALIGNED_SIZE)
    path = tmp_path / f"w.{fmt}"
    _save(theirs.state_dict(), path, fmt)
    ours = create_model(name, **kw)
    load_weights(ours, path)
    x = images(1, ALIGNED_SIZE)
    with torch.no_grad():
        want_features, got_features = theirs.forward_features(x), ours.eval().forward_features(x)
        want, got = theirs.forward_head(want_features), ours.forward_head(got_features)
    assert got_features.shape == want_features.shape  # output stride 8/16 keeps larger maps
    assert max_diff(got_features, want_features) <= TOL
    assert want.std() > 0.1
    assert max_diff(got, want) <= TOL


@pytest.mark.parametrize("name", ["xception41", "xception65", "xception71"])
def test_aligned_variant_is_recognised(name):
    from xception.weights.timm import config_name, kind_of

    state = timm.create_model(name).state_dict()
    assert kind_of(state) == "timm_aligned" and config_name(state, "timm_aligned") == name


def test_load_model_builds_the_matching_architecture(tmp_path):
    theirs = timm.create_model("xception71", num_classes=7)
    torch.save(theirs.state_dict(), tmp_path / "x71.pth")
    model, meta = load_model(tmp_path / "x71.pth")
    assert model.config.middle_repeats == 16 and len(model.config.entry_channels) == 5
    assert model.num_classes == 7 and "class_names" not in meta
    assert "timm aligned" in meta["source_format"]


def test_aligned_weights_refused_by_the_paper_model(tmp_path):
    torch.save(timm.create_model("xception41").state_dict(), tmp_path / "x41.pth")
    model = create_model("xception")
    with pytest.raises(WeightsError, match="no counterpart|lacks|shape"):
        load_weights(model, tmp_path / "x41.pth")
    assert model.config.padding == "tf_same"  # numerics untouched on failure


def test_predict_prepares_images_as_timm_evaluates_them(legacy, tmp_path):
    """Imported timm weights carry timm's eval transform (bicubic, crop 0.8975): a non-square
    photo becomes the same input as timm's own ``create_transform`` makes of it."""
    import numpy as np
    from PIL import Image

    from xception.data.preprocess import Preprocess, load_image

    state, _, _ = legacy
    torch.save(state, tmp_path / "legacy.pth")
    _, meta = load_model(tmp_path / "legacy.pth")
    pre = Preprocess(**meta["preprocess"])
    assert (pre.interpolation, pre.crop_fraction, pre.image_size) == ("bicubic", 0.8975, 299)
    path = tmp_path / "photo.png"
    rng = np.random.default_rng(0)
    smooth = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)  # upsampled: a photo-like image
    Image.fromarray(smooth).resize((480, 360), Image.Resampling.BILINEAR).save(path)
    cfg = timm.data.resolve_data_config({}, model=timm.create_model("legacy_xception"))
    ref = timm.data.create_transform(**cfg)(Image.open(path).convert("RGB"))
    ours = load_image(path, pre)
    assert ours.shape == ref.shape == (3, 299, 299)
    assert max_diff(ours, ref) < 1e-5  # the same PIL resize and crop, the same scaling
    squashed = load_image(path, Preprocess(299, 3))
    assert max_diff(squashed, ref) > 0.1
