"""Inception V3 as a table: torchvision's names, shapes and function; width scaling; small inputs."""

import subprocess
import sys
from collections.abc import Iterator

import pytest
import torch
from torch import nn
from weights_helpers import randomize_

from xception import InceptionConfig, InceptionV3, create_model
from xception.errors import ConfigError, InputError
from xception.models.inception import inception_table

pytestmark = pytest.mark.usefixtures("one_thread")

PAPER_PARAMETERS = 23_834_568   # torchvision's inception_v3 without the auxiliary tower, 1000 classes
PAPER_BODY = 21_785_568         # the same less its fc layer (2048 x 1000 + 1000)
HALF_WIDTH_BODY = 5_455_216     # width=0.5, num_classes=0
SMALL = dict(stem_stride=1, stem_pools=False, min_input_size=28)


def torchvision_inception(**kwargs) -> nn.Module:
    from torchvision.models import inception_v3

    return inception_v3(weights=None, init_weights=False, **{"aux_logits": False, **kwargs})


def parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def paper_pair() -> Iterator[tuple[nn.Module, nn.Module]]:
    """torchvision's network with random weights and random BatchNorm statistics (calibrated on
    random images, then jittered per channel, so logits are O(1) and depend on every layer), and
    ours with its state dict loaded."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # made before the function-scoped one_thread fixture applies
    torch.manual_seed(0)
    theirs = randomize_(torchvision_inception(), size=299)
    ours = InceptionV3().eval()
    ours.load_state_dict(theirs.state_dict())  # strict: every key, fc onto head.classifier
    yield ours, theirs
    torch.set_num_threads(threads)


def test_state_dict_has_torchvisions_names_and_shapes(paper_pair):
    ours, theirs = paper_pair
    renamed = {("head.classifier." + k[3:] if k.startswith("fc.") else k): v.shape
               for k, v in theirs.state_dict().items()}
    assert {k: v.shape for k, v in ours.state_dict().items()} == renamed
    assert "Conv2d_1a_3x3.bn.running_mean" in renamed and "Mixed_5b.branch1x1.conv.weight" in renamed
    bn = ours.Mixed_7c.branch_pool.bn
    assert (bn.eps, bn.momentum) == (theirs.Mixed_7c.branch_pool.bn.eps, 0.1) == (1e-3, 0.1)


def test_paper_size_parameter_count(paper_pair):
    ours, theirs = paper_pair
    assert parameters(ours) == parameters(theirs) == PAPER_PARAMETERS
    assert parameters(ours) - parameters(ours.head) == PAPER_BODY


def test_same_function_as_torchvision(paper_pair):
    ours, theirs = paper_pair
    bn = theirs.Mixed_6b.branch7x7_2.bn
    assert not torch.allclose(bn.running_mean, torch.zeros_like(bn.running_mean))
    assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))
    gen = torch.Generator().manual_seed(3)
    for batch, size in ((2, 299), (1, 75)):
        x = torch.rand(batch, 3, size, size, generator=gen) * 2 - 1
        with torch.no_grad():
            expected, got = theirs(x), ours(x)
        assert expected.std() > 0.1  # logits that depend on the input: the comparison can fail
        assert float((got - expected).abs().max()) <= 1e-4


def test_torchvision_aux_tower_weights_are_dropped_on_load():
    theirs = torchvision_inception(aux_logits=True, num_classes=10)
    ours = create_model("inception_v3", num_classes=10)
    ours.load_state_dict(theirs.state_dict())
    assert torch.equal(ours.head.classifier.weight, theirs.fc.weight)


def test_building_the_model_needs_no_torchvision():
    code = ("import sys; from xception import create_model; create_model('inception_v3'); "
            "print('torchvision' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_table_reads_like_torchvision():
    table = inception_table(InceptionConfig(in_chans=1))
    assert [s.name for s in table] == [
        "Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1",
        "Conv2d_4a_3x3", "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b",
        "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c"]
    spec = {s.name: s for s in table}
    assert [spec[f"Mixed_5{c}"].widths for c in "bcd"] == [(64, 64, 96, 32), (64, 64, 96, 64),
                                                            (64, 64, 96, 64)]
    assert spec["Mixed_6a"].widths == (384, 96, 288)  # the max-pool branch passes 288 through
    assert spec["Mixed_7a"].widths == (320, 192, 768) and spec["Mixed_7c"].out_channels == 2048
    assert {s.group for s in table if s.kind == "inception_c"} == {"17x17"}
    assert InceptionV3(InceptionConfig(in_chans=1, width=0.125)).Conv2d_1a_3x3.conv.in_channels == 1
    widths = InceptionConfig(width=0.3)
    assert [widths.scaled(c) for c in (32, 48, 80, 1)] == [10, 14, 24, 1]  # nearest, at least 1


def test_half_width_quarters_the_parameters_and_trains_at_32px():
    full_body = PAPER_BODY
    half = create_model("inception_v3", width=0.5, num_classes=0)
    assert parameters(half) == HALF_WIDTH_BODY and 0.24 < HALF_WIDTH_BODY / full_body < 0.27
    model = create_model("inception_v3", width=0.5, num_classes=10, **SMALL).train()
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([1, 7])
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert float(model.Conv2d_1a_3x3.conv.weight.grad.abs().sum()) > 0


@pytest.mark.parametrize("padding, expected", [("valid", (26, 12, 5)), ("symmetric", (32, 15, 7))])
def test_small_stem_keeps_32px_maps_large(padding, expected):
    """The documented map sizes, from hooks on every module: the 17x17 group sees >= 7x7."""
    config = InceptionConfig(width=0.125, num_classes=3, stem_padding=padding, **SMALL)
    model, seen = InceptionV3(config).eval(), {}

    def record(name: str):
        def hook(module, args, out) -> None:
            seen[name] = tuple(out.shape[-2:])
        return hook

    for name in model.stage_names:
        getattr(model, name).register_forward_hook(record(name))
    with torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
    assert seen == config.map_sizes(32)
    assert (seen["Mixed_5d"][0], seen["Mixed_6b"][0], seen["Mixed_7c"][0]) == expected
    assert min(seen["Mixed_6b"]) >= 7


def test_min_input_size_is_checked_against_the_stem():
    assert InceptionConfig().smallest_input() == 75
    with pytest.raises(ConfigError, match="min_input_size=74 is below 75"):
        InceptionConfig(min_input_size=74)
    assert InceptionConfig(stem_stride=1, stem_pools=False, min_input_size=13).smallest_input() == 13
    with pytest.raises(ConfigError, match="below 13"):
        InceptionConfig(stem_stride=1, stem_pools=False, min_input_size=12)
    model = create_model("inception_v3", width=0.125, **SMALL)
    with pytest.raises(InputError, match="minimum of 28x28"):
        model(torch.randn(1, 3, 27, 27))


@pytest.mark.parametrize("field, value, message", [
    ("width", 0, "width must be a number > 0"),
    ("width", True, "width must be a number > 0"),
    ("stem_stride", 3, "stem_stride=3 is not valid"),
    ("stem_stride", True, "stem_stride must be 1 or 2"),
    ("stem_pools", 0, "stem_pools must be true or false"),
    ("stem_padding", "same", "stem_padding='same' is not valid"),
    ("bn_eps", 0.0, "bn_eps must be a number > 0"),
    ("bn_momentum", 1.5, r"bn_momentum must be a number in \(0, 1\]"),
    ("num_classes", -1, "num_classes must be an integer >= 0"),
    ("in_chans", 0, "in_chans must be a positive integer"),
    ("fc_layers", (8, 0), "fc_layers must be a tuple of positive integers"),
    ("dropout", 1.0, r"dropout must be in \[0, 1\)"),
    ("min_input_size", 0, "min_input_size must be a positive integer"),
])
def test_every_field_is_validated(field, value, message):
    with pytest.raises(ConfigError, match=message):
        InceptionConfig(**{field: value})
