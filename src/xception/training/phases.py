"""Fine-tuning in two phases in one run (``train.unfreeze_epoch``), as Keras' transfer-learning
guide does it: phase 1 trains what ``train.freeze`` leaves (the new head) at ``optimizer.lr``;
from epoch ``unfreeze_epoch`` on, phase 2 trains everything (BatchNorm still in inference mode
with ``train.freeze_bn``) with a new optimizer at ``lr x unfreeze_lr_scale`` and its own
schedule over the remaining steps. The phase is saved in the checkpoint (``TrainState.phase``),
so ``--resume`` rebuilds the optimizer of the phase it stopped in before loading its state.
"""

from __future__ import annotations

from ..config import RunConfig
from .freezing import Frozen, freeze
from .optimizers import build_optimizer, build_scheduler
from .state import TrainState


def phase_steps(cfg: RunConfig, steps_per_epoch: int, phase: int) -> int:
    """Optimizer steps of ``phase``'s schedule (the run's step budget caps the last one)."""
    train = cfg.train
    if not train.unfreeze_epoch:
        epochs = train.epochs
    elif phase == 1:
        epochs = train.unfreeze_epoch - 1
    else:
        epochs = train.epochs - train.unfreeze_epoch + 1
    total = max(epochs * steps_per_epoch, 1)
    return min(total, train.max_steps) if train.max_steps else total


def enter_phase_two(cfg: RunConfig, state: TrainState, lr: float, steps_per_epoch: int,
                    batch: int, epoch_samples: int) -> Frozen:
    """Unfreeze (``train.freeze_bn`` still holds) and give ``state`` phase 2's optimizer and
    schedule; the caller rebuilds what wraps the model (DDP registers trainable parameters)."""
    frozen = freeze(state.model, "none", cfg.train.freeze_bn, cfg.train.bn_affine)
    state.optimizer = build_optimizer(state.model, cfg.optimizer, lr * cfg.train.unfreeze_lr_scale)
    state.scheduler = build_scheduler(state.optimizer, cfg.schedule,
                                      phase_steps(cfg, steps_per_epoch, 2),
                                      steps_per_epoch=steps_per_epoch, batch=batch,
                                      epoch_samples=epoch_samples)
    state.phase = 2
    return frozen
