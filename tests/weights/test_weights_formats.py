"""Format detection, round trips and every way a weights file can be bad.

Bad files must give a WeightsError that says what is wrong, leave the model untouched and write
nothing; ``.pth`` files are only ever read with ``weights_only=True``.
"""

from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import save_file
from weights_helpers import images, randomize_

from xception import WeightsError, create_model, load_model, load_weights, save_weights
from xception.weights import convert, read_source


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A randomised xception_small and its project safetensors file."""
    model = randomize_(create_model("xception_small"), size=32)
    path = tmp_path_factory.mktemp("w") / "small.safetensors"
    save_weights(model, path, class_names=[str(i) for i in range(10)])
    return model, path


def _same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sb = b.state_dict()
    return all(torch.equal(v, sb[k]) for k, v in a.state_dict().items())


def _unchanged(model: torch.nn.Module):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    return lambda: all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_round_trip_gives_identical_outputs(small):
    model, path = small
    loaded, meta = load_model(path)
    x = images(3, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert meta["class_names"] == [str(i) for i in range(10)]
    fresh = create_model("xception_small")
    load_weights(fresh, path)
    assert _same_state(fresh, model)


def test_aligned_config_survives_the_round_trip(tmp_path):
    model = create_model("xception41", output_stride=16, num_classes=5)
    save_weights(model, tmp_path / "a.safetensors")
    loaded, _ = load_model(tmp_path / "a.safetensors")
    assert loaded.config == model.config
    assert _same_state(loaded, model)


def test_torch_state_dict_layouts(small, tmp_path):
    """Our keys in .pth: bare, wrapped by a training script, or saved from DataParallel."""
    model, _ = small
    state = model.state_dict()
    variants = {"bare.pth": state, "wrapped.pth": {"model": state, "epoch": 7},
                "ddp.bin": {"module." + k: v for k, v in state.items()}}
    for name, obj in variants.items():
        torch.save(obj, tmp_path / name)
        fresh = create_model("xception_small")
        load_weights(fresh, tmp_path / name)
        assert _same_state(fresh, model), name


def test_bare_state_dict_needs_a_model_name(small, tmp_path):
    model, _ = small
    torch.save(model.state_dict(), tmp_path / "bare.pth")
    with pytest.raises(WeightsError, match="--model"):
        load_model(tmp_path / "bare.pth")
    loaded, _ = load_model(tmp_path / "bare.pth", "xception_small")
    assert _same_state(loaded, model)


def test_numerics_follow_the_file(tmp_path):
    """A project file records padding and eps; loading adopts them unless told to keep."""
    sym = create_model("xception_small", padding="symmetric", bn_eps=1e-5)
    save_weights(sym, tmp_path / "sym.safetensors")
    model = create_model("xception_small")
    load_weights(model, tmp_path / "sym.safetensors")
    assert (model.config.padding, model.config.bn_eps) == ("symmetric", 1e-5)
    kept = create_model("xception_small")
    load_weights(kept, tmp_path / "sym.safetensors", numerics="keep")
    assert (kept.config.padding, kept.config.bn_eps) == ("tf_same", 1e-3)


def test_ignore_head_loads_the_body_only(small):
    model, path = small
    other = create_model("xception_small", num_classes=3)
    with pytest.raises(WeightsError, match=r"head\.classifier\.weight.*\(10, 1024\).*\(3, 1024\)"):
        load_weights(other, path)
    head = other.head.classifier.weight.clone()
    load_weights(other, path, ignore_head=True)
    assert torch.equal(other.head.classifier.weight, head)
    assert torch.equal(other.stem.conv1.weight, model.stem.conv1.weight)


def test_wrong_architecture_names_layer_and_shapes(small):
    _, path = small
    model = create_model("xception")
    unchanged = _unchanged(model)
    with pytest.raises(WeightsError, match=r"layer '[\w.]+' has shape \(\d+(, \d+)*\) in the file "
                                           r"but \(\d+(, \d+)*\) in the model"):
        load_weights(model, path)
    assert unchanged()


def test_unknown_state_dict_is_named(tmp_path):
    torch.save({"layer1.0.conv1.weight": torch.zeros(64, 64, 3, 3)}, tmp_path / "resnet.pth")
    with pytest.raises(WeightsError, match="missing key.*unexpected.*layer1"):
        load_weights(create_model("xception_small"), tmp_path / "resnet.pth")


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "header"])
def test_damaged_files_fail_clearly_and_write_nothing(small, tmp_path, damage):
    model, path = small
    data = path.read_bytes()
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes({"truncate": data[: len(data) // 2], "garbage": os.urandom(4096),
                     "empty": b"", "header": data[:8] + b"{not json" + data[17:]}[damage])
    target = create_model("xception_small")
    unchanged = _unchanged(target)
    with pytest.raises(WeightsError, match="truncated|not a weights format|empty|damaged"):
        load_weights(target, bad)
    assert unchanged()
    dst = tmp_path / "out" / "converted.safetensors"
    with pytest.raises(WeightsError):
        convert(bad, dst)
    assert not dst.exists() and not (dst.parent.exists() and any(dst.parent.iterdir()))


def test_truncated_pth_fails_clearly(small, tmp_path):
    model, _ = small
    torch.save(model.state_dict(), tmp_path / "full.pth")
    data = (tmp_path / "full.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 3])
    with pytest.raises(WeightsError, match="damaged|truncated"):
        load_weights(create_model("xception_small"), tmp_path / "cut.pth")


class _Payload:
    """Unpickling this would create a file: proof that no code from a .pth ever runs."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_code_is_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"conv1.weight": torch.zeros(1), "evil": _Payload(str(marker))},
               tmp_path / "evil.pth")
    with pytest.raises(WeightsError, match="weights_only=True"):
        load_weights(create_model("xception_small"), tmp_path / "evil.pth")
    with pytest.raises(WeightsError):
        convert(tmp_path / "evil.pth", tmp_path / "out.safetensors")
    assert not marker.exists() and not (tmp_path / "out.safetensors").exists()


def test_format_is_detected_from_bytes_not_names(small, tmp_path):
    model, path = small
    renamed = tmp_path / "weights.h5"  # a misleading extension
    renamed.write_bytes(path.read_bytes())
    assert read_source(renamed).kind == "xception"
    torch.save(model.state_dict(), tmp_path / "sd.safetensors")  # a .pth named .safetensors
    assert read_source(tmp_path / "sd.safetensors").kind == "state_dict"
    save_file(model.state_dict(), tmp_path / "foreign.safetensors")  # no project metadata
    src = read_source(tmp_path / "foreign.safetensors")
    assert src.kind == "state_dict" and src.description == "safetensors state dict"
