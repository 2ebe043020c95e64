"""Named recipes hold the paper's settings, and their LR schedules follow the paper's formulas."""

from __future__ import annotations

import pytest
import torch

from xception.config import RunConfig
from xception.errors import ConfigError
from xception.training.optimizers import build_optimizer, build_scheduler, lr_rule, scaled_lr
from xception.training.recipes import RECIPES, get_recipe


def lrs_by_step(cfg: RunConfig, steps: int, steps_per_epoch: int, batch: int,
                epoch_samples: int | None = None) -> list[float]:
    """The LR each optimizer step uses, from a real optimizer + LambdaLR stepped like training."""
    model = torch.nn.Linear(2, 2)
    opt = build_optimizer(model, cfg.optimizer, scaled_lr(cfg.optimizer, batch))
    sched = build_scheduler(opt, cfg.schedule, steps, steps_per_epoch=steps_per_epoch, batch=batch,
                            epoch_samples=epoch_samples)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_paper_imagenet_lr_is_0045_times_094_every_two_epochs():
    cfg = get_recipe("paper-imagenet")
    spe, batch = 7, 256
    lrs = lrs_by_step(cfg, 10 * spe, spe, batch)
    for step, lr in enumerate(lrs):
        epoch = step // spe
        assert lr == pytest.approx(0.045 * 0.94 ** (epoch // 2), rel=1e-12), (step, epoch)
    # the global batch scales it linearly from the reference batch of 256
    lrs = lrs_by_step(cfg, 3 * spe, spe, 1024)
    assert lrs[0] == pytest.approx(0.18) and lrs[2 * spe] == pytest.approx(0.18 * 0.94)


def test_paper_imagenet_settings():
    cfg = get_recipe("paper-imagenet")
    o = cfg.optimizer
    assert (o.name, o.momentum, o.nesterov, o.weight_decay, o.label_smoothing) == \
        ("sgd", 0.9, False, 1e-5, 0.0)
    assert cfg.model.name == "xception" and cfg.model.overrides["dropout"] == 0.5
    assert cfg.data.image_size == 299 and cfg.data.name == "imagefolder"
    assert cfg.train.ema and cfg.schedule.warmup_fraction == 0.0


def test_paper_jft_lr_is_0001_times_09_every_3m_samples():
    cfg = get_recipe("paper-jft")
    assert (cfg.optimizer.name, cfg.optimizer.momentum, cfg.optimizer.lr) == ("rmsprop", 0.9, 0.001)
    assert cfg.model.overrides["dropout"] == 0.0 and cfg.data.name == "manifest"
    batch, spe, epoch_samples = 256, 40_000, 40_000 * 256
    rule = lr_rule(cfg.schedule, 200_000, spe, batch, epoch_samples)
    for samples in (0, 2_999_808, 3_000_064, 5_999_872, 6_000_128, 29_999_872, 30_000_128):
        step = samples // batch
        assert rule.samples_before(step) == samples
        assert 0.001 * rule(step) == pytest.approx(0.001 * 0.9 ** (samples // 3_000_000)), samples
    # across epoch boundaries with a short last batch, samples are counted exactly
    rule = lr_rule(cfg.schedule, 100, steps_per_epoch=3, batch=1_000_000, epoch_samples=2_500_000)
    assert [rule.samples_before(s) for s in range(5)] == [0, 1e6, 2e6, 2.5e6, 3.5e6]
    assert [rule(s) for s in range(5)] == pytest.approx([1, 1, 1, 1, 0.9])
    # and the LambdaLR that training steps gives the same rates
    lrs = lrs_by_step(cfg, 5, 3, 1_000_000, 2_500_000)
    assert lrs == pytest.approx([0.001, 0.001, 0.001, 0.001, 0.0009])
    # RMSprop's rate is not scaled with the batch
    assert scaled_lr(cfg.optimizer, 4096) == 0.001


def test_paper_jft_fc_adds_two_4096_layers():
    assert get_recipe("paper-jft-fc").model.overrides["fc_layers"] == [4096, 4096]
    assert "fc_layers" not in get_recipe("paper-jft").model.overrides  # a fresh copy each time


def test_quick_is_the_default_and_cosine_matches_torch():
    from xception.cli.main import build_parser
    from xception.cli.train import resolve_config

    quick = get_recipe("quick")
    assert resolve_config(build_parser().parse_args(["train"])) == quick
    # the paper's block structure at a small scale (see the recipe's docstring)
    mcfg = quick.model.config
    assert quick.model.name == "xception_tiny" and mcfg.middle_repeats == 8 and mcfg.residual
    assert mcfg.stem_padding == "valid" and mcfg.dropout == 0.3  # the unpadded stem; dropout
    assert (quick.data.name, quick.data.image_size, quick.train.epochs) == ("digits", 28, 14)
    cfg = RunConfig()
    total = 184
    lrs = lrs_by_step(cfg, total, 23, 64)
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    warm = round(0.15 * total)
    s = torch.optim.lr_scheduler
    ref = s.SequentialLR(opt, [s.LinearLR(opt, 0.01, total_iters=warm),
                               s.CosineAnnealingLR(opt, T_max=total - warm)], [warm])
    expected = []
    for _ in range(total):
        expected.append(opt.param_groups[0]["lr"])
        opt.step()
        ref.step()
    assert lrs == pytest.approx(expected, abs=1e-9)


def test_every_recipe_validates_and_documents_its_command():
    for name, fn in RECIPES.items():
        cfg = get_recipe(name)
        assert RunConfig.from_dict(cfg.to_dict()) == cfg
        assert "xception train" in (fn.__doc__ or ""), name
    with pytest.raises(ConfigError, match="paper-imagenet"):
        get_recipe("imagenet")


def _three_steps(name: str, kernel: dict[str, bool]) -> tuple[torch.optim.Optimizer, list]:
    """Three steps of ``build_optimizer``'s optimizer, its update kernel replaced by ``kernel``
    (empty: as built), on a fixed conv + BatchNorm net."""
    from xception.config import OptimizerSection

    torch.manual_seed(0)
    # no bias before the BatchNorm: its gradient is ~0, and Adam turns rounding noise there into
    # whole steps of either sign
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, bias=False), torch.nn.BatchNorm2d(4))
    opt = build_optimizer(net, OptimizerSection(name=name, lr=0.05, weight_decay=1e-3))
    for group in opt.param_groups:
        group.update(kernel)
    x, target = torch.randn(2, 3, 6, 6), torch.randn(2, 4, 4, 4)
    for _ in range(3):
        opt.zero_grad()
        (net(x) - target).square().mean().backward()
        opt.step()
    return opt, [p.detach() for p in net.parameters()]


@pytest.mark.parametrize("name", ["sgd", "adamw", "rmsprop"])
def test_optimizers_take_a_fused_or_multi_tensor_step_with_the_loop_s_numbers(name, monkeypatch):
    """SGD and AdamW run PyTorch's fused kernel (equal to the per-parameter loop to float32
    rounding), RMSprop the multi-tensor step (bit for bit); PyTorch's CPU default is the loop."""
    fused = {"sgd": "_fused_sgd_", "adamw": "_fused_adamw_"}.get(name)
    calls = []
    if fused:  # the fused kernel really runs (not a silent fallback to another path)
        real = getattr(torch, fused)
        monkeypatch.setattr(torch, fused, lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    opt, got = _three_steps(name, {})
    monkeypatch.undo()
    _, loop = _three_steps(name, {"foreach": False, "fused": False})
    assert opt.defaults.get("fused") is (True if fused else None)
    assert opt.defaults.get("foreach") is (None if fused else True)
    assert len(calls) == (6 if fused else 0)  # 3 steps x 2 parameter groups
    for a, b in zip(got, loop, strict=True):
        if fused:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        else:
            assert torch.equal(a, b)


def test_update_kernel_falls_back_to_the_multi_tensor_step():
    from xception.training.optimizers import update_kernel

    cpu = [torch.zeros(3)]
    assert update_kernel(cpu, fused_available=True) == {"fused": True}
    assert update_kernel(cpu, fused_available=False) == {"foreach": True}
    assert update_kernel([torch.zeros(3, device="meta")], fused_available=True) == {"foreach": True}
    assert update_kernel([torch.zeros(3, dtype=torch.int64)], True) == {"foreach": True}
    assert update_kernel([], fused_available=True) == {"foreach": True}
