"""benchmarks/cpu_step_floor.py: its candidate kernels compute the same thing, and its floor sums
the fastest of them (a floor built from a kernel that computes less would be no floor)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def floor_script(monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201 - the module
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import cpu_step_floor

    return cpu_step_floor


def _rows(t: torch.Tensor | tuple) -> torch.Tensor:
    """A kernel's result as (pixels, channels) rows, or a weight gradient flattened per filter."""
    if isinstance(t, tuple):  # convolution_backward: (grad input, grad weight, grad bias)
        t = next(v for v in t if v is not None)
    if t.dim() == 4 and t.shape[1] >= 1 and t.is_contiguous(memory_format=torch.channels_last) \
            and not t.is_contiguous():
        return t.permute(0, 2, 3, 1).reshape(-1, t.shape[1])  # an activation
    return t.reshape(t.shape[0], -1)


def test_records_every_conv_batchnorm_and_relu(floor_script) -> None:
    ops, size = floor_script.model_ops("fashion_budget", 2)
    assert size == 28
    kinds = Counter()
    for op, n in ops.items():
        kinds[floor_script.conv_kind(op) if op[0] == "conv" else op[0]] += n
    # entry 3 + middle 8 + exit 1 blocks: 2 + 3*8 + 2 + 2 separable convs, 2 stem convs,
    # 4 shortcut 1x1 convs (entry 3, exit 1)
    assert kinds["depthwise conv"] == 34
    assert kinds["pointwise conv"] == 34 + 4
    assert kinds["other conv"] == 2
    assert kinds["batchnorm"] == 2 + 34 + 4


def test_candidates_of_each_part_agree(floor_script) -> None:
    torch.manual_seed(0)
    ops, _ = floor_script.model_ops("fashion_budget", 2)
    checked = Counter()
    for op in ops:
        if op[0] != "conv":
            continue
        for part, cands in floor_script.conv_kernels(op).items():
            results = {name: _rows(fn()) for name, fn in cands.items()}
            ref = results.pop("conv")
            for name, got in results.items():
                assert got.shape == ref.shape, (op, part, name)
                torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4,
                                           msg=f"{op} {part}: {name} differs from the conv")
                checked[name] += 1
    assert checked["matrix product"] > 0 and checked["tap by tap"] > 0


def test_floor_takes_the_fastest_kernel_at_its_fastest_round(floor_script) -> None:
    conv = ("conv", (2, 8, 4, 4), (8, 8, 1, 1), (1, 1), (0, 0), (1, 1), 1)
    bn = ("batchnorm", (2, 8, 4, 4))
    ops = Counter({conv: 3, bn: 2})
    key_c, key_b = floor_script._key(conv), floor_script._key(bn)
    rounds = [
        {key_c: {"forward": {"conv": 5.0, "matrix product": 4.0},
                 "input grad": {"conv": 2.0, "matrix product": 9.0}},
         key_b: {"forward": {"aten": 1.0}, "backward": {"aten": 3.0}}},
        {key_c: {"forward": {"conv": 3.0, "matrix product": 4.5},
                 "input grad": {"conv": 2.5, "matrix product": 1.5}},
         key_b: {"forward": {"aten": 2.0}, "backward": {"aten": 2.5}}},
    ]
    got = floor_script.floor(ops, rounds)
    assert got["by_kind_ms"]["pointwise conv"] == pytest.approx(3 * (3.0 + 1.5))
    assert got["by_kind_ms"]["batchnorm"] == pytest.approx(2 * (1.0 + 2.5))
    assert got["conv_ms"] == pytest.approx(13.5)
    assert got["total_ms"] == pytest.approx(13.5 + 7.0)
    assert got["fastest_kernel_counts"]["pointwise conv input grad: matrix product"] == 3
