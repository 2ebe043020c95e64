"""Keras parity: the real ``keras.applications.Xception`` (torch backend) vs our import of its files.

Keras builds the reference with random, well-scaled weights and BN moving statistics calibrated on
random images (so activations stay O(1) and outputs depend on every detail), saves it in each file
layout, and we compare logits and pre-pooling features at 299 px (odd maps) and at even sizes where
TF pads asymmetrically. Sensitivity checks show the same comparison fails, by far, for the
symmetric-padding model and for BatchNorm eps 1e-5: these tests can fail.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys

os.environ["KERAS_BACKEND"] = "torch"  # before keras is imported anywhere

import numpy as np
import pytest
import torch

keras = pytest.importorskip("keras")
h5py = pytest.importorskip("h5py")

from weights_helpers import max_diff  # noqa: E402

from xception import WeightsError, create_model, load_weights  # noqa: E402
from xception.data.imagenet import imagenet_class_names  # noqa: E402
from xception.data.preprocess import keras_imagenet, load_image  # noqa: E402

TOL = 1e-4


def _residual_branch_end(name: str) -> bool:
    """The BN whose output is added to a residual: damped, as in trained nets, so rounding
    differences are not amplified block after block (the padding and eps effects still are)."""
    m = re.fullmatch(r"block(\d+)_sepconv(\d)_bn", name)
    if not m:
        return False
    block, conv = int(m[1]), int(m[2])
    return (conv == 2 and block in (2, 3, 4, 13)) or (conv == 3 and 5 <= block <= 12)


def _randomize_keras(model, rng: np.random.Generator) -> None:
    """Fan-in scaled kernels, random BN affine; moving statistics from one batch, then jittered."""
    bns = []
    for layer in model.layers:
        values = layer.get_weights()
        if not values:
            continue
        kind = type(layer).__name__
        if kind == "BatchNormalization":
            gamma, beta, mean, var = values
            low, high = (0.1, 0.3) if _residual_branch_end(layer.name) else (0.3, 0.9)
            values = [rng.uniform(low, high, gamma.shape), rng.normal(0, 0.2, beta.shape), mean,
                      var]
            layer.momentum = 0.0
            bns.append(layer)
        else:
            new = []
            for w in values:
                if w.ndim == 4:  # HWIO; depthwise (kh, kw, in, 1) has fan-in kh*kw
                    fan_in = w.shape[0] * w.shape[1] * (1 if w.shape[3] == 1 and kind ==
                                                        "SeparableConv2D" else w.shape[2])
                elif w.ndim == 2:
                    fan_in = w.shape[0]
                else:
                    new.append(rng.normal(0, 0.1, w.shape))
                    continue
                new.append(rng.normal(0, fan_in ** -0.5, w.shape))
            values = new
        layer.set_weights([np.asarray(v, np.float32) for v in values])
    model(rng.uniform(-1, 1, (2, 128, 128, 3)).astype(np.float32), training=True)
    for layer in bns:
        gamma, beta, mean, var = layer.get_weights()
        mean = mean + rng.normal(0, 0.05, mean.shape) * np.sqrt(var)
        var = var * rng.uniform(0.8, 1.2, var.shape)
        layer.set_weights([gamma, beta, mean.astype(np.float32), var.astype(np.float32)])


def _keras2_weights_file(full_h5: str, dst: str, official_names: bool = False) -> None:
    """The weights-only Keras 2 layout from a legacy full-model .h5 (its ``model_weights``).

    ``official_names`` names the auto-named shortcut layers as in the file Keras distributes
    (``conv2d_1``..``conv2d_4``, ``batch_normalization_1``..``_4``) and adds TF's ``:0`` to
    weight names.
    """
    with h5py.File(full_h5, "r") as src, h5py.File(dst, "w") as out:
        g = src["model_weights"]
        names = [n.decode() if isinstance(n, bytes) else n for n in g.attrs["layer_names"]]
        new_names = list(names)
        if official_names:
            for auto in ("conv2d", "batch_normalization"):
                found = [n for n in names if re.fullmatch(rf"{auto}(_\d+)?", n)]
                found.sort(key=lambda n: int(n.rpartition("_")[2]) if n != auto else 0)
                for rank, n in enumerate(found, 1):
                    new_names[names.index(n)] = f"{auto}_{rank}"
        out.attrs["layer_names"] = np.array([n.encode() for n in new_names])
        out.attrs["backend"] = b"tensorflow"
        out.attrs["keras_version"] = b"2.1.2"
        for old, new in zip(names, new_names, strict=True):
            group = out.create_group(new)
            weight_names = []
            for w in g[old].attrs["weight_names"]:
                w = w.decode() if isinstance(w, bytes) else w
                w_new = f"{new}/{w.split('/')[-1]}:0" if official_names else w
                group.create_dataset(w_new, data=np.asarray(g[old][w]))
                weight_names.append(w_new.encode())
            group.attrs["weight_names"] = np.array(weight_names) if weight_names else np.array([])


def _strip_names(src: str, dst: str) -> None:
    """A Keras 3 .weights.h5 as older Keras 3 versions write it: no layer names."""
    shutil.copy(src, dst)
    with h5py.File(dst, "a") as f:
        for key in f["layers"]:
            if "vars" in f["layers"][key] and "name" in f["layers"][key]["vars"].attrs:
                del f["layers"][key]["vars"].attrs["name"]


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    """Keras models sharing one set of random weights, their files and reference outputs."""
    d = tmp_path_factory.mktemp("keras")
    rng = np.random.default_rng(0)
    notop = keras.applications.Xception(weights=None, include_top=False,
                                        input_shape=(None, None, 3), pooling=None)
    _randomize_keras(notop, rng)  # any input size: calibrated on small images, which is cheaper
    dense = [rng.normal(0, 2048 ** -0.5, (2048, 1000)), rng.normal(0, 0.1, 1000)]
    weights = notop.get_weights() + [w.astype(np.float32) for w in dense]
    top = keras.applications.Xception(weights=None, input_shape=(299, 299, 3),
                                      classifier_activation=None)
    top.set_weights(weights)
    top224 = keras.applications.Xception(weights=None, input_shape=(224, 224, 3),
                                         classifier_activation=None)
    top224.set_weights(weights)

    files = {"keras3": d / "top.weights.h5", "keras_zip": d / "top.keras",
             "notop_keras3": d / "notop.weights.h5", "keras2_full": d / "top_full.h5",
             "keras2": d / "top.h5", "keras2_official": d / "official.h5",
             "notop_keras2_official": d / "official_notop.h5",
             "keras3_unnamed": d / "unnamed.weights.h5"}
    top.save_weights(files["keras3"])
    top.save(files["keras_zip"])
    notop.save_weights(files["notop_keras3"])
    top.save(files["keras2_full"])  # legacy full-model HDF5: weights under model_weights
    notop.save(d / "notop_full.h5")
    _keras2_weights_file(files["keras2_full"], files["keras2"])
    _keras2_weights_file(files["keras2_full"], files["keras2_official"], official_names=True)
    _keras2_weights_file(d / "notop_full.h5", files["notop_keras2_official"], official_names=True)
    _strip_names(files["keras3"], files["keras3_unnamed"])

    sizes = (299, 224, 72)
    x = {s: np.random.default_rng(s).uniform(-1, 1, (1, s, s, 3)).astype(np.float32)
         for s in sizes}
    out = {}
    for size, model in ((299, top), (224, top224)):
        # one forward of the include_top model gives both its pre-pooling features and its logits
        both = keras.Model(model.input, [model.get_layer("block14_sepconv2_act").output,
                                         model.output])
        out[f"features{size}"], out[f"logits{size}"] = both(x[size])
    # at 72 px, the include_top=False model, and Keras' own pooling and Dense layers on its output
    out["features72"] = notop(x[72])
    out["logits72"] = top.get_layer("predictions")(top.get_layer("avg_pool")(out["features72"]))
    out = {k: torch.from_numpy(keras.ops.convert_to_numpy(v)) for k, v in out.items()}
    for k in [k for k in out if k.startswith("features")]:
        out[k] = out[k].permute(0, 3, 1, 2)  # NHWC -> NCHW
    inputs = {s: torch.from_numpy(v).permute(0, 3, 1, 2).contiguous() for s, v in x.items()}
    return {"files": files, "out": out, "x": inputs, "top": top}


@pytest.fixture(scope="module")
def ours(ref):
    model = create_model("xception")
    load_weights(model, ref["files"]["keras3"])
    return model.eval()


@torch.no_grad()
@pytest.mark.parametrize("size", [299, 224, 72])
def test_features_and_logits_match_keras(ref, ours, size):
    """Pre-pooling features (include_top=False, pooling=None) and pre-softmax logits."""
    features = ours.forward_features(ref["x"][size])
    want = ref["out"][f"features{size}"]
    assert features.shape == want.shape
    assert want.abs().mean() > 0.1  # informative activations, not vanished
    assert max_diff(features, want) <= TOL
    logits, want = ours.forward_head(features), ref["out"][f"logits{size}"]
    assert want.std() > 0.1
    assert max_diff(logits, want) <= TOL


@torch.no_grad()
def test_comparison_detects_symmetric_padding_and_torch_eps(ref):
    """The same comparison with timm's numerics must fail by a wide margin."""
    x, features, logits = ref["x"][224], ref["out"]["features224"], ref["out"]["logits224"]
    symmetric = create_model("xception", padding="symmetric").eval()
    load_weights(symmetric, ref["files"]["keras3"], numerics="keep")
    assert symmetric.config.padding == "symmetric"
    got = symmetric.forward_features(x)
    assert max_diff(got, features) > 100 * TOL
    assert max_diff(symmetric.forward_head(got), logits) > 100 * TOL
    eps = create_model("xception", bn_eps=1e-5).eval()
    load_weights(eps, ref["files"]["keras3"], numerics="keep")
    assert max_diff(eps.forward_features(ref["x"][72]), ref["out"]["features72"]) > 100 * TOL


@pytest.mark.parametrize("fmt", ["keras2", "keras2_full", "keras2_official", "keras_zip",
                                 "keras3_unnamed"])
def test_every_layout_imports_the_same_tensors(ref, ours, fmt):
    model = create_model("xception")
    load_weights(model, ref["files"][fmt])
    want = ours.state_dict()
    for k, v in model.state_dict().items():
        assert torch.equal(v, want[k]), k


@pytest.mark.parametrize("fmt", ["notop_keras3", "notop_keras2_official"])
def test_notop_files_import_the_same_body(ref, ours, fmt):
    """include_top=False files load into a num_classes=0 model: the body of the top model."""
    model = create_model("xception", num_classes=0)
    load_weights(model, ref["files"][fmt])
    want = ours.state_dict()
    state = model.state_dict()
    assert len(state) == len(want) - 2
    assert all(torch.equal(v, want[k]) for k, v in state.items())


def test_symmetric_model_switches_to_keras_numerics(ref):
    """Loading Keras weights into a model built with timm's numerics gives Keras' function."""
    model = create_model("xception", padding="symmetric", bn_eps=1e-5)
    load_weights(model, ref["files"]["keras3"])
    assert (model.config.padding, model.config.bn_eps) == ("tf_same", 1e-3)
    assert all(m.eps == 1e-3 for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_head_mismatches_are_named(ref):
    with pytest.raises(WeightsError, match="predictions"):
        load_weights(create_model("xception", num_classes=0), ref["files"]["keras3"])
    with pytest.raises(WeightsError, match=r"predictions.*\(2048, 1000\).*\(10, 2048\)"):
        load_weights(create_model("xception", num_classes=10), ref["files"]["keras3"])
    with pytest.raises(WeightsError, match="no layer 'predictions'"):
        load_weights(create_model("xception"), ref["files"]["notop_keras3"])
    model = create_model("xception", num_classes=10)
    head = model.head.classifier.weight.clone()
    load_weights(model, ref["files"]["keras3"], ignore_head=True)
    assert torch.equal(model.head.classifier.weight, head)


def test_wrong_architecture_is_refused_untouched(ref):
    model = create_model("xception41")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(WeightsError, match="no layer 'block2_sepconv3'"):
        load_weights(model, ref["files"]["keras3"])
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert model.config.padding == "symmetric"


def test_keras_style_preprocessing_matches_keras(tmp_path):
    """predict's Keras mode feeds exactly what keras.utils.load_img + preprocess_input feed."""
    from PIL import Image

    rng = np.random.default_rng(3)
    path = tmp_path / "photo.png"
    Image.fromarray(rng.integers(0, 256, (181, 263, 3), dtype=np.uint8)).save(path)
    img = keras.utils.load_img(path, target_size=(299, 299))
    want = keras.applications.xception.preprocess_input(
        keras.utils.img_to_array(img)[None]).astype(np.float32)
    got = load_image(path, keras_imagenet())
    assert got.shape == (3, 299, 299)
    np.testing.assert_array_equal(got.permute(1, 2, 0).numpy(), want[0])


@pytest.mark.parametrize("fmt", ["keras2", "keras3", "keras_zip"])
def test_truncated_keras_files_fail_clearly(ref, tmp_path, fmt):
    data = ref["files"][fmt].read_bytes()
    bad = tmp_path / ref["files"][fmt].name
    bad.write_bytes(data[: len(data) // 2])
    model = create_model("xception")
    before = model.state_dict()["stem.conv1.weight"].clone()
    with pytest.raises(WeightsError, match="truncated|damaged|not a readable"):
        load_weights(model, bad)
    assert torch.equal(model.state_dict()["stem.conv1.weight"], before)


def _cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xception", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_readme_flow_download_convert_predict(ref, tmp_path):
    """docs/weights.md's steps, with a local file:// "server": fetch (MD5-checked), convert, predict;
    predict's top-5 are the classes Keras itself ranks first for the same image.
    (test_download.py covers the refusals: no --download, a wrong MD5.)"""
    from PIL import Image

    src = ref["files"]["keras2_official"]
    url, md5 = src.as_uri(), hashlib.md5(src.read_bytes()).hexdigest()
    cache, dst = tmp_path / "cache", tmp_path / "xception_imagenet.safetensors"

    r = _cli("convert", "keras:imagenet", dst, "--cache-dir", cache, "--url", url, "--download",
             "--md5", md5)
    assert r.returncode == 0, r.stderr
    assert "block2_sepconv1 -> entry_flow.block2.sepconvs.0" in r.stdout
    assert "batch_normalization_1 -> entry_flow.block2.shortcut.bn" in r.stdout
    assert "padding='tf_same'" in r.stdout and dst.exists()

    image = tmp_path / "cat.jpg"
    pixels = np.random.default_rng(5).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(image, quality=95)
    r = _cli("predict", dst, image)
    assert r.returncode == 0, r.stderr
    ranked = re.findall(r"(\S[^()]*?) \((\d+\.\d)%\)", r.stdout.split(": ", 1)[1])
    assert len(ranked) == 5

    top = ref["top"]
    top.load_weights(src)  # Keras' own loader reads the file (it holds the same weights)
    x = keras.applications.xception.preprocess_input(
        keras.utils.img_to_array(keras.utils.load_img(image, target_size=(299, 299)))[None])
    probs = keras.ops.convert_to_numpy(keras.ops.softmax(top(x)))[0]
    names = imagenet_class_names()
    want = [names[i] for i in np.argsort(-probs)[:5]]
    assert [name for name, _ in ranked] == want
    assert float(ranked[0][1]) == pytest.approx(100 * probs.max(), abs=0.06)
