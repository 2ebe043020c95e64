"""The paper's headline as an experiment (issue 26): Xception against Inception V3 at equal
parameters, on three log-spaced training-set sizes, with every budget chosen on a held-out
validation split and the test set read once, at the end.

The two networks, the data and the budget are fixed here, in one place: the pilot that chose
the budgets (``benchmarks/versus_pilot.py``) trains exactly these configurations (seed 0), and
the experiment's seed-0 runs are the pilot's runs again (a test checks the configs are equal).

- data: Fashion-MNIST at its own 28 px. ``HOLDOUT`` of the 60,000 training images are the
  validation split (stratified, ``data.split_seed=0``); the training subsets are ``SIZES`` of
  the other 55,000 (factors of 4: log2 levels 0, 2, 4). The 10,000 test images are evaluated
  once, after the last epoch of each run: the primary metric.
- models, at equal parameters (within 3%), the same input, the same total downsampling (both
  end on 4x4 maps) and the same head (global pooling -> dropout -> linear): Xception =
  ``xception_small`` at the experiments' half width with a stem that keeps 28 px (stride 1,
  TF-"same") and entry strides (1, 2, 2), so its middle flow runs on 7x7 maps; Inception V3
  (``models/inception.py``) with its width matched to Xception's parameters by bisection, stem
  stride 1 and no stem pools, so its 17x17 group runs on 10x10 maps.
- budget: SGD + Nesterov, lr 0.1, batch 64, cosine schedule with warm-up, the same
  augmentation and BatchNorm recalibration for both; epochs per size from the pilot's ladder
  (``EPOCHS``), chosen on the validation split before any run of this experiment.
"""

from __future__ import annotations

import json
import math
from typing import Any

from ..config import RunConfig, apply_overrides, parse_assignments
from .budget import bisect_parameters, count_parameters
from .design import Experiment, Test, Variant

SIZES = (3_438, 13_750, 55_000)       # training images: factors of 4 (log2 levels 0, 2, 4)
HOLDOUT = 5_000                       # validation images held out of the 60,000 training images
FIRST_RUNG = {3_438: 20, 13_750: 10, 55_000: 5}  # the pilot ladder's first budget (epochs)
TOLERANCE = 0.003                     # the pilot's plateau rule: within 0.3 points of 2x the epochs
MAX_RUNGS = 3                         # the ladder: E, 2E, 4E
# size -> (epochs, plateaued): the pilot's choice (benchmarks/results/cpu/versus_pilot). No
# size plateaued: Xception still gained > 0.3 points from 2E to 4E at every size, so by the
# declared rule every size gets 4E, stopped by the budget.
EPOCHS: dict[int, tuple[int, bool]] = {3_438: (80, False), 13_750: (40, False),
                                       55_000: (20, False)}

BUDGET = ["data.name=fashion-mnist", "data.image_size=28", f"data.val_holdout={HOLDOUT}",
          "data.split_seed=0", "train.batch_size=64", "optimizer.lr=0.1",
          "train.bn_recalibration=8"]
XCEPTION = ["model.name=xception_small", "model.stem_channels=[8,8]",
            "model.entry_channels=[16,32,64]", "model.middle_channels=64",
            "model.middle_repeats=8", "model.exit_channels=[64,128]",
            "model.final_channels=[128,128]", "model.stem_stride=1",
            'model.stem_padding="tf_same"', "model.entry_strides=[1,2,2]",
            "model.min_input_size=16"]
INCEPTION_SMALL = {"stem_stride": 1, "stem_pools": False, "min_input_size": 28}
MODELS = {"xception": "Xception", "inception": "Inception V3"}


def _classes() -> dict[str, Any]:
    return {"num_classes": 10, "in_chans": 1}


def inception_width(target: int) -> float:
    """The Inception V3 width whose parameter count is nearest ``target`` (bisection)."""
    width, _ = bisect_parameters(
        "inception_v3", lambda w: {**_classes(), **INCEPTION_SMALL, "width": w}, target, 0.02, 1.0)
    return round(width, 4)


def model_settings(model: str) -> list[str]:
    """``--set`` assignments of one side's network: "xception" or "inception" (its width
    matched to Xception's parameter count)."""
    if model == "xception":
        return XCEPTION
    xception = apply_overrides(RunConfig(), XCEPTION).model
    width = inception_width(count_parameters(xception.name, {**_classes(),
                                                             **xception.overrides}))
    return ["model.name=inception_v3", *(f"model.{k}={json.dumps(v)}" for k, v in
                                         {**INCEPTION_SMALL, "width": width}.items())]


def run_settings(model: str, size: int, epochs: int) -> list[str]:
    """Every setting of one run but the seed (and the thread count, the machine's business)."""
    return [*BUDGET, *model_settings(model), f"data.train_subset={size}", f"train.epochs={epochs}"]


def variant_name(model: str, size: int) -> str:
    return f"{MODELS[model]}, {size:,} images"


def _variant(model: str, size: int, epochs: int) -> Variant:
    changes = parse_assignments(run_settings(model, size, epochs))
    fields = dict(changes.pop("model"))
    name = fields.pop("name")
    return Variant(variant_name(model, size), fields, {"model": {"name": name}, **changes})


def budget_lines() -> list[str]:
    """The budgets as the report declares them (fixed by the pilot, before any run)."""
    return [f"{size:,} images: {epochs} epochs ("
            + ("the validation top-1 had plateaued" if plateaued else
               "stopped by the budget: still gaining > 0.3 points from "
               f"{epochs // 2} to {epochs} epochs")
            + ")" for size, (epochs, plateaued) in EPOCHS.items()]


def versus(model: str, base: dict[str, Any], match_params: bool) -> Experiment:
    """Xception vs Inception V3 at each size (``model``/``base``/``match_params`` are the
    registry's arguments: this experiment names its own networks and is matched by design)."""
    variants = tuple(_variant(side, size, EPOCHS[size][0]) for size in SIZES for side in MODELS)
    xc = tuple(variant_name("xception", size) for size in SIZES)
    inc = tuple(variant_name("inception", size) for size in SIZES)
    levels = tuple(float(round(math.log2(size / SIZES[0]))) for size in SIZES)
    return Experiment(
        "versus",
        "Is Xception more accurate than Inception V3 at equal parameters, and more so with more "
        "training data? (the paper's headline: ImageNet 0.790 vs 0.782 top-1; JFT MAP@100 6.70 "
        "vs 6.36)",
        "At the same parameter count Xception is more accurate than Inception V3 at every "
        "training-set size, and its lead grows with the size of the training set.",
        variants,
        (*(Test(f"Xception > Inception V3 at {size:,} images", a, b, metric="test_top1")
           for size, a, b in zip(SIZES, xc, inc, strict=True)),
         Test("the gap grows with the training set (slope per doubling of the images)", xc, inc,
              metric="test_top1", levels=levels),
         *(Test(f"Xception > Inception V3 at {size:,} images, on the validation split", a, b,
                primary=False) for size, a, b in zip(SIZES, xc, inc, strict=True))),
        "Equal parameters (within 3%) and the same input, downsampling, head, optimizer, "
        "schedule, augmentation and epochs; the multiply-adds differ (see the table) and so do "
        "the map sizes of the middle stages (Xception's middle flow on 7x7, Inception's 17x17 "
        "group on 10x10). Inception V3's width multiplier scales every branch alike, so its "
        "smallest branches are narrow at this size. 28 px Fashion-MNIST is far from ImageNet; "
        "the sizes span 3.4k-55k images, not ImageNet's 1.2 M or JFT's 350 M. No size reached "
        "a validation plateau within the budget the machine allowed (see Declared), so the "
        "comparison is of budget-limited runs.",
        pairs=tuple(zip(xc, inc, strict=True)),
        declarations=(
            f"- Data: Fashion-MNIST, 28 px; {HOLDOUT:,} of the 60,000 training images held out as "
            "the validation split (stratified, split seed 0); training subsets of "
            f"{', '.join(f'{size:,}' for size in SIZES)} of the other {60_000 - HOLDOUT:,}. The "
            "primary metric is read on the 10,000 test images, once per run, after its last "
            "epoch; budgets were chosen on the validation split only.",
            "- Budget per size (the pilot's ladder E, 2E, 4E, seed 0, validation split; a size "
            "takes the smallest rung within 0.3 points of the next one for both models, else "
            "4E): " + "; ".join(budget_lines()) + ".",
            "- Training speed: both networks timed side by side in one process, in turns "
            "(one SGD step of each per repetition), median images/s."),
        side_by_side=((MODELS["xception"], xc[0]), (MODELS["inception"], inc[0])),
        budget_reason="chosen per size by the pilot on the validation split (Declared above; "
        "benchmarks/versus_pilot.py, its runs in benchmarks/results/cpu/versus_pilot)",
        factor="training images", factor_ticks=tuple(f"{size:,}" for size in SIZES))
