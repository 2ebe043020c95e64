"""Freezing for fine-tuning: parameters that do not train, and BatchNorm in inference mode.

``train.freeze``: "none", "backbone" (every top-level stage but the head) or a comma-separated
list of top-level stage names (``stem,entry_flow``). A frozen parameter has
``requires_grad=False``, so it gets no gradient, no weight decay and no optimizer state (the
optimizer takes trainable parameters only) and is bit-identical after training.

BatchNorm is the usual fine-tuning failure (Keras' transfer-learning guide; its issues: a frozen
layer that still normalises with batch statistics): the BatchNorm layers of frozen stages, and
with ``train.freeze_bn`` every BatchNorm layer, run in inference mode: ``model.train()`` leaves
them in eval mode, so they normalise with their running statistics and never update them. Their
scale and shift are frozen too unless ``train.bn_affine``. This is done by giving the layer a
subclass of its own class whose ``train`` keeps eval mode: state-dict keys, ``deepcopy`` (EMA),
DDP and saving are unaffected, and ``unfreeze`` gives the class back.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..errors import ConfigError

_INFERENCE: dict[type, type] = {}


def _inference_class(cls: type) -> type:
    """``cls`` with a ``train`` that always stays in eval mode (one subclass per class)."""
    if getattr(cls, "_inference_bn", False):
        return cls
    if cls not in _INFERENCE:
        def train(self, mode: bool = True):
            return nn.Module.train(self, False)

        _INFERENCE[cls] = type(f"Inference{cls.__name__}", (cls,),
                               {"train": train, "_inference_bn": True, "__module__": __name__})
    return _INFERENCE[cls]


def is_inference_bn(module: nn.Module) -> bool:
    """Whether ``module`` is a BatchNorm layer held in inference mode (skipped by recalibration)."""
    return isinstance(module, _BatchNorm) and getattr(type(module), "_inference_bn", False)


def _set_inference(bn: nn.Module, on: bool) -> None:
    if on and not is_inference_bn(bn):
        bn.__class__ = _inference_class(type(bn))
        bn.train(False)
    elif not on and is_inference_bn(bn):
        bn.__class__ = type(bn).__mro__[1]


def stage_names(model: nn.Module) -> list[str]:
    return [name for name, _ in model.named_children()]


def frozen_stages(model: nn.Module, spec: str) -> list[str]:
    """The top-level stages ``spec`` freezes ("none", "backbone" or names), checked."""
    stages = stage_names(model)
    spec = spec.strip()
    if spec in ("", "none"):
        return []
    if spec == "backbone":
        return [name for name in stages if name != "head"]
    names = [part.strip() for part in spec.split(",") if part.strip()]
    unknown = [name for name in names if name not in stages]
    if unknown:
        raise ConfigError(f"train.freeze={spec!r}: {', '.join(unknown)} is not a stage of "
                          f"{type(model).__name__}; choose none, backbone or a comma-separated "
                          f"list of {', '.join(stages)}")
    return names


@dataclass(frozen=True)
class Frozen:
    """What ``freeze`` did, for the run's log."""

    stages: tuple[str, ...]
    frozen: int           # parameters (elements) that do not train
    trainable: int
    inference_bn: int     # BatchNorm layers in inference mode

    def __str__(self) -> str:
        what = f"frozen: {', '.join(self.stages)}" if self.stages else "nothing frozen"
        return (f"{what}; {self.trainable:,} of {self.frozen + self.trainable:,} parameters "
                f"train; {self.inference_bn} BatchNorm layers in inference mode")


def freeze(model: nn.Module, spec: str = "none", freeze_bn: bool = False,
           bn_affine: bool = False) -> Frozen:
    """Freeze the stages ``spec`` names and put BatchNorm in inference mode where asked (module
    docstring). Everything not named trains (an earlier freeze is undone first)."""
    stages = frozen_stages(model, spec)
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    for name, stage in model.named_children():
        frozen = name in stages
        for parameter in stage.parameters():
            parameter.requires_grad_(not frozen)
        for module in stage.modules():
            if isinstance(module, _BatchNorm):
                inference = frozen or freeze_bn
                _set_inference(module, inference)
                if inference and not (bn_affine and not frozen):
                    for parameter in module.parameters():
                        parameter.requires_grad_(False)
    model.train(model.training)  # the classes changed: put every layer in its mode again
    parameters = list(model.parameters())
    trainable = sum(p.numel() for p in parameters if p.requires_grad)
    return Frozen(tuple(stages), sum(p.numel() for p in parameters) - trainable, trainable,
                  sum(is_inference_bn(m) for m in model.modules()))
