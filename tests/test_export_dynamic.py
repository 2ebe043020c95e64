"""Export for any batch and image size: ONNX (onnxruntime) and torch.export programs (after
torch.export.save / load) equal the PyTorch model at two batch sizes and two image sizes other
than the ones traced and checked at export; the TF-"same" padding is shape arithmetic."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY
from weights_helpers import images, randomize_

import xception
from xception.cli.main import main
from xception.errors import ConfigError
from xception.export import export_onnx, export_program, same_pad_amounts
from xception.export.graph import ExportConv
from xception.models.layers import Conv2d, same_padding

EXPORT_SIZE = 24       # traced at 24 and checked at 24 and 25 by the export itself
SIZES = (29, 36)       # odd and even, neither of those: the graph must compute the padding
BATCHES = (1, 4)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    # xception_small's blocks: stride-2 max-pools and 1x1 shortcuts with size-dependent TF padding
    return randomize_(xception.create_model("xception_small", **TINY, num_classes=5,
                                            min_input_size=8), size=EXPORT_SIZE)


def assert_matches(run, model: torch.nn.Module) -> None:
    for size in SIZES:
        for batch in BATCHES:
            x = images(batch, size, seed=size + batch)
            with torch.no_grad():
                want = model(x)
            got = torch.as_tensor(run(x))
            assert got.shape == want.shape and float(want.std()) > 0.1
            assert float((got - want).abs().max()) <= 1e-4 * max(1.0, float(want.abs().max())), \
                (batch, size)


def test_same_pad_amounts_is_tf_s_rule():
    for size in range(1, 70):
        for kernel, stride, dilation in [(3, 2, 1), (3, 1, 1), (3, 1, 2), (2, 1, 1), (5, 2, 1),
                                         (3, 3, 1), (4, 2, 1), (1, 1, 1)]:
            assert same_pad_amounts(size, kernel, stride, dilation) == \
                same_padding(size, kernel, stride, dilation), (size, kernel, stride, dilation)


def test_onnx_any_batch_and_image_size(model, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    path, check = export_onnx(model, tmp_path / "m.onnx", EXPORT_SIZE, verify=True)
    assert check.shapes == ((1, 24), (3, 24), (1, 25), (3, 25))
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 3, "height", "width"]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert_matches(lambda x: session.run(["logits"], {"images": x.numpy()})[0], model)


def test_pt2_any_batch_and_image_size_through_the_cli(model, tmp_path, capsys):
    xception.save_weights(model, tmp_path / "w.safetensors",
                          preprocess={"image_size": EXPORT_SIZE, "in_chans": 3})
    capsys.readouterr()
    assert main(["export", str(tmp_path / "w.safetensors"), "--format", "pt2",
                 str(tmp_path / "m.pt2")]) == 0
    out = capsys.readouterr().out
    assert "any image size >= 8, any batch size; torch.export.load matches PyTorch" in out
    assert "(batch 1, 3 x 24x24, 25x25 px)" in out
    program = torch.export.load(str(tmp_path / "m.pt2")).module()

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return program(x)

    assert_matches(run, model)
    with pytest.raises(Exception, match="height|width|size|range|>= 8"):
        run(images(1, 7))  # below the model's minimum: refused by the program's own checks


def test_a_fixed_size_graph_when_asked_for(model, tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    path, check = export_onnx(model, tmp_path / "f.onnx", 30, verify=True, dynamic_size=False)
    assert check.shapes == ((1, 30), (3, 30))
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 3, 30, 30]
    fixed = export_program(model, 30, dynamic_size=False).module()
    with torch.no_grad():
        assert float((fixed(images(2, 30)) - model(images(2, 30))).abs().max()) <= 1e-4
        with pytest.raises(Exception):  # noqa: B017 - torch's own error for a wrong shape
            fixed(images(2, 31))


def test_a_conv_the_graph_cannot_pad_for_every_size_names_the_fallback():
    conv = Conv2d(4, 4, 2, stride=3, padding="tf_same")   # kernel smaller than the stride
    with pytest.raises(ConfigError, match="--image-size N"):
        ExportConv(conv, "block.conv")
