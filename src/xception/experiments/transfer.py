"""Transfer learning, measured (issue 27): pretrain on five Fashion-MNIST classes, then learn the
other five from k images per class, three ways: from scratch, a linear probe (the pretrained
backbone frozen, BatchNorm in inference mode, a new head) and a full fine-tune (Keras' two
phases: the head on the frozen backbone, then everything at 1/100 of the rate, BatchNorm still
in inference mode).

- data: source task classes 0-4 (T-shirt/top, Trouser, Pullover, Dress, Coat), target task
  classes 5-9 (Sandal, Shirt, Sneaker, Bag, Ankle boot), each with ``HOLDOUT`` of its 30,000
  training images held out as its validation split (stratified, split seed 0); the target
  task's 5,000 test images are the primary metric, read once per run after its last epoch.
- the pretraining (a stage: one run per seed, ``stages.py``) trains on all the source task's
  other training images; each target run of seed s starts from seed s's pretraining, so the
  comparisons are paired by seed.
- budgets: ``PRETRAIN_EPOCHS`` and ``EPOCHS`` (per k, the same for the three methods) are chosen
  on the validation splits by ``benchmarks/transfer_pilot.py`` before any run of this
  experiment; until then the experiment refuses to run.
"""

from __future__ import annotations

from typing import Any

from ..config import parse_assignments
from ..errors import ConfigError
from .budget import FASHION_WIDTHS, MODEL, MODEL_OVERRIDES
from .design import Experiment, Test, Variant

SOURCE, TARGET = "0,1,2,3,4", "5,6,7,8,9"
HOLDOUT = 2_500
SHOTS = (10, 100, 0)                    # training images per class; 0: all (5,500)
PRETRAIN_EPOCHS: int | None = None      # chosen by the pilot (validation split of the source)
EPOCHS: dict[int, int] | None = None    # shots -> epochs, chosen by the pilot (target's split)
METHODS = ("scratch", "linear probe", "fine-tune")
# AdamW at a constant rate for the linear probe and the fine-tune's first phase (its second:
# x 0.01, the guide's ratio). The guide's 1e-3 left the new head unconverged within the pilot's
# ladder; 0.1 was the best of 1e-3 / 1e-2 / 3e-2 / 1e-1 / 3e-1 for the probe at 100 images per
# class, 20 epochs, on the target task's validation split (benchmarks/transfer_pilot.py).
HEAD_LR = 0.1


def shots_name(shots: int) -> str:
    return "all" if shots == 0 else str(shots)


def _model() -> dict[str, Any]:
    """The experiments' Fashion-MNIST network (``budget.py``), as model overrides."""
    return {**MODEL_OVERRIDES, **parse_assignments(FASHION_WIDTHS)["model"]}


def _data(classes: str, shots: int) -> dict[str, Any]:
    return {"name": "fashion-mnist", "image_size": 28, "classes": classes,
            "val_holdout": HOLDOUT, "split_seed": 0, "per_class": shots, "train_subset": 0}


def method_settings(method: str, shots: int, epochs: int) -> dict[str, dict[str, Any]]:
    """The run settings of one method at ``shots`` images per class."""
    settings: dict[str, dict[str, Any]] = {
        "model": {"name": MODEL}, "data": _data(TARGET, shots),
        "train": {"epochs": epochs, "bn_recalibration": 8}}
    if method == "scratch":  # the experiments' recipe: SGD + Nesterov, lr 0.1, cosine
        return settings
    settings["optimizer"] = {"name": "adamw", "lr": HEAD_LR, "weight_decay": 0.0}
    settings["schedule"] = {"name": "constant", "warmup_fraction": 0.0}
    settings["train"] |= {"init": "@pretrain", "freeze": "backbone", "freeze_bn": True}
    if method == "fine-tune":  # phase 2 for the second half of the epochs (at least one)
        settings["train"] |= {"unfreeze_epoch": epochs // 2 + 1, "unfreeze_lr_scale": 0.01}
    return settings


def variant_name(method: str, shots: int) -> str:
    return f"{method}, {shots_name(shots)} per class"


def transfer(model: str, base: dict[str, Any], match_params: bool) -> Experiment:
    """The registry's builder (its arguments unused: the experiment fixes its own networks)."""
    if PRETRAIN_EPOCHS is None or EPOCHS is None:
        raise ConfigError("experiment transfer: its budgets are not chosen yet; "
                          "benchmarks/transfer_pilot.py chooses them on the validation splits "
                          "(issue 27), before any run")
    pretrain = Variant("pretrain", _model(), {
        "model": {"name": MODEL}, "data": _data(SOURCE, 0),
        "train": {"epochs": PRETRAIN_EPOCHS, "bn_recalibration": 8}})
    variants = tuple(Variant(variant_name(method, shots), _model(),
                             method_settings(method, shots, EPOCHS[shots]))
                     for shots in SHOTS for method in METHODS)
    tests = []
    for shots in SHOTS:
        scratch, probe, tune = (variant_name(m, shots) for m in METHODS)
        tests += [Test(f"fine-tune > scratch at {shots_name(shots)} per class", tune, scratch,
                       metric="test_top1"),
                  Test(f"fine-tune > linear probe at {shots_name(shots)} per class", tune, probe,
                       metric="test_top1"),
                  Test(f"linear probe > scratch at {shots_name(shots)} per class", probe, scratch,
                       metric="test_top1", primary=False)]
    return Experiment(
        "transfer",
        "Does pretraining on other classes help Xception learn new ones from few images, and "
        "does fine-tuning the whole network beat a linear probe? (Keras' transfer-learning "
        "guide, on Fashion-MNIST)",
        "Fine-tuning pretrained weights beats training from scratch and beats a linear probe, at "
        "every number of images per class.",
        variants, tuple(tests),
        "The source and target classes are from one data set (similar images; shirts resemble "
        "T-shirts and pullovers), far closer than ImageNet to a user's images. The linear probe "
        "and the fine-tune use AdamW at a constant rate (the guide's method; the rate, "
        f"{HEAD_LR:g}, chosen on the validation split), scratch the experiments' SGD recipe; "
        "the three methods train the same epochs.",
        stages=(pretrain,),
        declarations=(
            f"- Data: Fashion-MNIST 28 px; source task classes {SOURCE}, target task classes "
            f"{TARGET}; {HOLDOUT:,} training images of each task held out as its validation "
            "split; the primary metric on the target task's 5,000 test images, once per run.",
            f"- Budgets (chosen on the validation splits by benchmarks/transfer_pilot.py): "
            f"pretraining {PRETRAIN_EPOCHS} epochs; "
            + "; ".join(f"{shots_name(s)} per class: {EPOCHS[s]} epochs" for s in SHOTS) + "."),
        budget_reason="chosen by benchmarks/transfer_pilot.py on the validation splits",
        pairs=tuple((variant_name("fine-tune", s), variant_name("scratch", s)) for s in SHOTS))
