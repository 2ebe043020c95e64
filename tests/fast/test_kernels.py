"""The Triton kernels against PyTorch, forward and backward, fp32 and bf16.

Without a GPU they run under Triton's CPU interpreter (conftest.py sets TRITON_INTERPRET=1
before triton is imported); with one, compiled. Shapes are small so the interpreter is quick,
and large enough that every kernel runs several programs with partial (masked) blocks.
"""

import pytest
import torch

pytest.importorskip("triton", reason="the Triton kernels need triton (a torch dependency on Linux)")

from xception.fast.kernels import launch, ops  # noqa: E402
from xception.fast.kernels.check import CASES, TOLERANCE, run_case, stats_stability  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_fused_op_matches_pytorch(case, dtype, training):
    before = launch.LAUNCHES.copy()
    r = run_case(case, DEVICE, dtype, training, n=2, c=80, size=11)
    launched = launch.LAUNCHES - before
    # the Triton path ran, forward and backward: a silent fallback to PyTorch launches nothing
    assert launched, f"{case.name}: no Triton kernel was launched"
    assert any("bwd" in k or "backward" in k for k in launched), (case.name, dict(launched))
    assert r["ok"], f"{case.name}: {r['errors']} (tolerance {r['tolerance']})"
    assert set(r["errors"]) >= {"out", "grad_in0"}


def test_statistics_are_stable_far_from_zero():
    # E[x^2] - E[x]^2 in float32 would lose every digit of a unit variance at mean 1000
    assert stats_stability(DEVICE, offset=1000.0) < 1e-4


def test_the_comparison_catches_a_wrong_kernel(monkeypatch):
    """A kernel fed an off-by-one padding must fail the check (the check can fail)."""
    real = ops.conv_geometry

    def shifted(conv, h, w):
        g = real(conv, h, w)
        return ops.ConvGeometry(g.kernel, g.stride, g.dilation, (g.pads[0] + 1, g.pads[1]),
                                g.out_hw)

    monkeypatch.setattr(ops, "conv_geometry", shifted)
    case = next(c for c in CASES if c.name == "dw_bn_relu")
    r = run_case(case, DEVICE, torch.float32, True, n=2, c=80, size=11)
    assert not r["ok"] and r["worst"] > 100 * TOLERANCE[torch.float32]


def test_cpu_launch_without_interpreter_says_what_to_do(monkeypatch):
    monkeypatch.setattr(launch, "interpreter_enabled", lambda: False)
    from xception.fast.kernels.batchnorm import channel_stats

    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        channel_stats(torch.randn(8, 4))


def test_torch_backend_bypasses_the_kernels():
    x = torch.randn(2, 3, 4, 4)
    assert launch.kernels_run_on(x) == launch.interpreter_enabled()
    with launch.use_backend("torch"):
        assert not launch.kernels_run_on(x)
    with pytest.raises(ValueError, match="backend"), launch.use_backend("cuda"):
        pass


def test_cumulative_running_statistics_match_pytorch():
    """momentum=None (cumulative average over steps) and the step counter, two steps."""
    bn = torch.nn.BatchNorm2d(20, momentum=None).to(DEVICE)
    ref = torch.nn.BatchNorm2d(20, momentum=None).to(DEVICE)
    for _ in range(2):
        x = (torch.randn(3, 20, 7, 9) * 2 + 1).to(DEVICE).contiguous(memory_format=torch.channels_last)
        ops.batchnorm_act(x, bn, relu=True)
        ref(x)
    assert int(bn.num_batches_tracked) == int(ref.num_batches_tracked) == 2
    torch.testing.assert_close(bn.running_mean, ref.running_mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bn.running_var, ref.running_var, rtol=1e-5, atol=1e-6)
