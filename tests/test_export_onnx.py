"""ONNX export: onnxruntime's outputs equal PyTorch's (<= 1e-4) for any batch size."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch
from weights_helpers import images, max_diff, randomize_

from xception import WeightsError, create_model, save_weights
from xception.export import export_onnx, verify_onnx

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

SIZE = 96  # even: two max-pools pad asymmetrically (TF "same"), baked into the graph


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = randomize_(create_model("xception"), size=SIZE)
    path, check = export_onnx(model, tmp_path_factory.mktemp("onnx") / "xception.onnx", SIZE,
                              verify=True)
    return model, path, check


def test_onnxruntime_matches_torch(exported):
    model, path, check = exported
    assert check is not None and check.diff <= 1e-4
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph)
    assert graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    x = images(3, SIZE, seed=7)  # another batch size than the export's example
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(["logits"], {"images": x.numpy()})[0])
    with torch.no_grad():
        want = model(x)
    assert want.std() > 0.1
    assert max_diff(got, want) <= 1e-4


def test_verification_can_fail(exported):
    """The check is real: the graph against a model with other weights is rejected."""
    model, path, _ = exported
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.head.classifier.bias[3] += 0.01
    with pytest.raises(WeightsError, match="differs from the PyTorch model"):
        verify_onnx(other, path, SIZE)


def test_cli_export(tmp_path):
    model = randomize_(create_model("xception_small"), size=32)
    save_weights(model, tmp_path / "small.safetensors")
    out = tmp_path / "small.onnx"
    r = subprocess.run([sys.executable, "-m", "xception", "export", str(tmp_path /
                        "small.safetensors"), "--format", "onnx", str(out), "--image-size", "40"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "onnxruntime matches PyTorch" in r.stdout and out.exists()
    x = images(2, 40)
    got = ort.InferenceSession(str(out)).run(["logits"], {"images": x.numpy()})[0]
    with torch.no_grad():
        assert max_diff(torch.from_numpy(got), model(x)) <= 1e-4
