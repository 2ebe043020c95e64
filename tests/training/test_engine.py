"""``train_step`` on a plain linear model: the gradient is the global batch's mean however it is
split, a non-finite loss skips the update but not the LR schedule, EMA and clipping apply."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from xception.data import Batch
from xception.training.engine import Engine, make_ema, train_step
from xception.training.state import TrainState

X = torch.randn(8, 2, 2, 3, generator=torch.Generator().manual_seed(0))
Y = torch.tensor([0, 1, 2, 0, 1, 2, 2, 1])


def _engine(lr: float = 1.0, ema: bool = False, clip: float = 0.0) -> Engine:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 / (1 + step))
    state = TrainState(model=model, optimizer=opt, scheduler=sched,
                       ema=make_ema(model, 0.5) if ema else None)
    return Engine(state=state, clip_grad_norm=clip, input_shape=(2, 2, 3), num_classes=3)


def _micros(*sizes: int) -> list[Batch]:
    out, lo = [], 0
    for n in sizes:
        out.append(Batch(X[lo:lo + n], Y[lo:lo + n], []))
        lo += n
    return out


def _params(eng: Engine) -> list[torch.Tensor]:
    return [p.detach().clone() for p in eng.state.model.parameters()]


def test_the_gradient_is_the_global_mean_however_the_batch_is_split():
    ref = _engine()
    before = _params(ref)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    model.load_state_dict(ref.state.model.state_dict())
    F.cross_entropy(model(X), Y).backward()  # the mean over all 8 images
    expected = [b - p.grad for b, p in zip(before, model.parameters(), strict=True)]  # lr 1
    for split in [(8,), (4, 4), (5, 3), (2, 2, 2, 2)]:
        eng = _engine()
        res = train_step(eng, _micros(*split), global_size=8)
        assert res.seen == 8 and not res.skipped
        total = F.cross_entropy(model(X), Y, reduction="sum").item()
        assert res.loss_sum == pytest.approx(total, rel=1e-6)
        for got, want in zip(_params(eng), expected, strict=True):
            torch.testing.assert_close(got, want, rtol=0, atol=1e-6, msg=f"split {split}")


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step()` before")
def test_a_nonfinite_loss_skips_the_update_but_steps_the_schedule():
    eng = _engine()
    before = _params(eng)
    bad = _micros(4, 4)
    bad[1] = Batch(torch.full_like(bad[1].x, float("nan")), bad[1].y, [])
    res = train_step(eng, bad, global_size=8)
    assert res.skipped
    assert all(torch.equal(a, b) for a, b in zip(before, _params(eng), strict=True))
    assert eng.state.scheduler.last_epoch == 1  # the LR follows the step count, skipped or not
    assert eng.state.optimizer.param_groups[0]["lr"] == pytest.approx(0.5)
    res = train_step(eng, _micros(4, 4), global_size=8)
    assert not res.skipped and eng.state.scheduler.last_epoch == 2
    assert not all(torch.equal(a, b) for a, b in zip(before, _params(eng), strict=True))


def test_ema_follows_the_weights_with_warm_up():
    eng = _engine(lr=0.1, ema=True)
    ema = eng.state.ema
    train_step(eng, _micros(8), global_size=8)
    first = _params(eng)  # the first update copies the weights
    assert all(torch.equal(e, p) for e, p in zip(ema.module.parameters(), first, strict=True))
    train_step(eng, _micros(8), global_size=8)
    d = min(0.5, 2 / 11)  # decay after one update: min(decay, (1 + n) / (10 + n))
    for e, a, b in zip(ema.module.parameters(), first, _params(eng), strict=True):
        torch.testing.assert_close(e.detach(), d * a + (1 - d) * b, rtol=0, atol=1e-7)
    assert int(ema.n_averaged) == 2


def test_gradient_clipping_caps_the_update():
    eng = _engine(lr=1.0, clip=1e-3)
    before = _params(eng)
    train_step(eng, _micros(8), global_size=8)
    step = torch.cat([(b - a).flatten() for a, b in zip(before, _params(eng), strict=True)])
    assert step.norm().item() == pytest.approx(1e-3, rel=1e-4)


def test_unreadable_images_are_reported_and_a_stop_request_is_passed_on():
    eng = _engine()
    micros = [Batch(None, None, [("a.png", "truncated")]), *_micros(4)]
    res = train_step(eng, micros, global_size=8, stop_requested=True)
    assert res.bad == [("a.png", "truncated")] and res.seen == 4 and res.stop


class _Wrapper(nn.Module):
    """Stands in for DDP / torch.compile: its own ``training`` flag, the raw model inside."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


def test_a_step_after_an_evaluation_trains_in_training_mode():
    """The step skips ``train()`` when the model is already training; an evaluation puts the raw
    model (not the wrapper the step calls) in eval mode, and the next step must undo that."""
    eng = _engine()
    seen = []
    eng.state.model.register_forward_pre_hook(lambda m, _: seen.append(m.training))
    eng.step_model = _Wrapper(eng.state.model)
    train_step(eng, _micros(8), 8)
    eng.state.model.eval()  # what evaluate() does
    train_step(eng, _micros(8), 8)
    eng.step_model = None
    eng.state.model.eval()
    train_step(eng, _micros(8), 8)
    assert seen == [True, True, True]
