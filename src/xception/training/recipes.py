"""Named training recipes as data: each is the changes it makes to the defaults, with the exact
command in its docstring; ``get_recipe`` makes the validated ``RunConfig``.

A recipe is only a starting point: every field can still be changed with ``--set section.key=value``
or a ``--config`` file, and the result is validated before any work starts. Settings the paper does
not give (batch size, epochs, augmentation, EMA decay) are marked "ours" below.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..config import RunConfig, merge_changes
from ..errors import ConfigError

Recipe = dict[str, dict[str, Any]]  # section -> the fields it changes from the defaults


def quick() -> Recipe:
    """The project's main job: ``xception_tiny`` on the embedded digits, in seconds on a 2-core
    CPU (docs/getting-started.md has the measured time and accuracy, docs/recipes.md the spread
    over seeds).

    Command: ``xception train`` (the same as ``xception train --recipe quick``).
    Still the paper's Xception block structure (stem, 3 entry blocks, 8 middle blocks of 3
    separable convs, exit block, 2 separable convs, residuals, BN after every conv); scaled down:
    - widths ~1/6-1/3 of the paper's (``xception_tiny``, 0.70 M parameters instead of 22.9 M):
      1,438 training images of 10 classes need no more, and a 2-core CPU trains it in seconds;
    - the stem keeps the resolution (stride 1) but its two convs are unpadded, as in the paper:
      the 8x8 digits upsampled to 28 px shrink to 24 px in the stem and reach the exit flow at
      2x2 after four stride-2 stages (9.7 M multiply-adds per image);
    - dropout 0.3 before the classifier (the paper uses 0.5 on ImageNet);
    - 14 epochs of SGD + Nesterov, lr 0.1 at batch 64, weight decay 5e-4, linear warm-up for 15%
      of the steps then cosine decay (ours: the paper trains ImageNet for weeks); small random
      rotations, shifts and zooms of the digits (``DigitsJitter``). The epoch count was chosen
      by paired-seed screens of the misclassified validation images (docs/recipes.md;
      ``benchmarks/quick_recipe_screen.py`` and its raw runs).
    """
    return {"model": {"name": "xception_tiny", "overrides": {"dropout": 0.3}},
            "data": {"name": "digits", "image_size": 28},
            "train": {"epochs": 14, "batch_size": 64}}


def paper_imagenet() -> Recipe:
    """Xception on ImageNet as in the paper (Sec. 4.3): the 299 px model, SGD, step decay, Polyak.

    Command (one node, 8 GPUs; ``train/`` and ``val/`` ImageFolder trees under /data/imagenet)::

        torchrun --standalone --nproc_per_node 8 -m xception train --recipe paper-imagenet \\
            --data /data/imagenet --out runs/xception-imagenet

    Paper: SGD momentum 0.9, lr 0.045 decayed x0.94 every 2 epochs, weight decay 1e-5, dropout 0.5
    before the classifier, no label smoothing, no auxiliary tower, Polyak averaging of the weights
    for evaluation. Ours: global batch 256, 100 epochs, EMA decay 0.9999 per step, Inception-style
    random-resized crop (8%-100%) + flip, centre crop 87.5% for evaluation, bf16 on GPU.

    LR and batch size: the paper gives no batch size. ``optimizer.lr=0.045`` is the rate for a
    global batch of ``optimizer.lr_reference_batch=256``; for another global batch B the run uses
    0.045 * B / 256 (linear scaling), e.g. ``--batch-size 1024`` -> lr 0.18. Set
    ``--set optimizer.lr_reference_batch=0`` to use ``optimizer.lr`` unscaled.
    """
    return {
        "model": {"name": "xception", "overrides": {"dropout": 0.5}},
        "data": {"name": "imagefolder", "image_size": 299, "augment": True, "min_crop_scale": 0.08,
                 "hflip": True, "crop_fraction": 0.875, "num_workers": 8, "prefetch_factor": 4},
        "optimizer": {"name": "sgd", "lr": 0.045, "lr_reference_batch": 256, "momentum": 0.9,
                      "nesterov": False, "weight_decay": 1e-5, "label_smoothing": 0.0},
        "schedule": {"name": "step", "warmup_fraction": 0.0, "decay_rate": 0.94,
                     "decay_every": 2.0, "decay_unit": "epochs"},
        "train": {"epochs": 100, "batch_size": 256, "eval_batch_size": 128, "precision": "auto",
                  "channels_last": True, "ema": True, "ema_decay": 0.9999,
                  "checkpoint_every": 1000, "log_every": 100}}


def paper_jft() -> Recipe:
    """Xception on a JFT-style multi-label dataset (paper Sec. 4.2), evaluated with MAP@100.

    Command (a manifest folder: train.jsonl/csv, val.jsonl/csv and classes.txt; 2 nodes x 8 GPUs)::

        torchrun --nnodes 2 --nproc_per_node 8 --rdzv_backend c10d \\
            --rdzv_endpoint HOST:29500 --rdzv_id jft -m xception train --recipe paper-jft \\
            --data /data/jft --out runs/xception-jft

    Paper: RMSprop momentum 0.9, lr 0.001 decayed x0.9 every 3,000,000 samples, no dropout,
    sigmoid (binary cross-entropy) multi-label loss, weight decay 1e-5 (the ImageNet rate, which
    the paper reuses), MAP@100 with classes weighted by how common they are. Ours: global batch 256
    without LR scaling (RMSprop does not follow the linear rule), RMSprop decay 0.9 and epsilon 1.0
    (TF's Inception settings), 10 epochs, crop + flip augmentation, bf16 on GPU. Polyak averaging
    is given by the paper for ImageNet only; add ``--set train.ema=true`` to use it here too.
    """
    return {
        "model": {"name": "xception", "overrides": {"dropout": 0.0}},
        "data": {"name": "manifest", "image_size": 299, "augment": True, "min_crop_scale": 0.08,
                 "hflip": True, "crop_fraction": 0.875, "class_weights": "frequency",
                 "num_workers": 8, "prefetch_factor": 4},
        "optimizer": {"name": "rmsprop", "lr": 0.001, "lr_reference_batch": 0, "momentum": 0.9,
                      "nesterov": False, "weight_decay": 1e-5, "alpha": 0.9, "eps": 1.0},
        "schedule": {"name": "step", "warmup_fraction": 0.0, "decay_rate": 0.9,
                     "decay_every": 3_000_000, "decay_unit": "samples"},
        "train": {"epochs": 10, "batch_size": 256, "eval_batch_size": 128, "precision": "auto",
                  "channels_last": True, "ema": False, "checkpoint_every": 1000,
                  "log_every": 100}}


def paper_jft_fc() -> Recipe:
    """``paper-jft`` with the paper's two fully-connected layers of 4096 units before the classifier.

    Command::

        torchrun --standalone --nproc_per_node 8 -m xception train --recipe paper-jft-fc \\
            --data /data/jft --out runs/xception-jft-fc
    """
    return merge_changes(paper_jft(), {"model": {"fc_layers": [4096, 4096]}})


def finetune() -> Recipe:
    """Fine-tune pretrained Xception weights on your own images, in two phases in one run, as
    Keras' "Transfer learning & fine-tuning" guide does it with Xception.

    Command (a Keras ImageNet file, converted or as downloaded; an ImageFolder with train/ and
    val/)::

        xception train --recipe finetune --init xception_weights_tf_dim_ordering_tf_kernels.h5 \
            --data /data/my-images --out runs/finetuned

    Phase 1 (epochs 1-20): the backbone frozen, every BatchNorm layer in inference mode (its
    ImageNet statistics, never batch statistics: the guide's lesson), a new head (global
    pooling -> dropout 0.2 -> linear) trained with Adam(W) at 1e-3. Phase 2 (epochs 21-30):
    everything trains, BatchNorm still in inference mode, a new Adam(W) at 1e-5
    (``train.unfreeze_lr_scale=0.01``). The phase is saved in the checkpoint, so ``--resume``
    continues in the right one. Ours: no weight decay and a constant rate (the guide's Adam),
    batch 32, 299 px with crop + flip augmentation.
    """
    return {
        "model": {"name": "xception", "overrides": {"dropout": 0.2}},
        "data": {"name": "imagefolder", "image_size": 299, "augment": True,
                 "min_crop_scale": 0.5, "hflip": True},
        "optimizer": {"name": "adamw", "lr": 1e-3, "weight_decay": 0.0},
        "schedule": {"name": "constant", "warmup_fraction": 0.0},
        "train": {"epochs": 30, "batch_size": 32, "freeze": "backbone", "freeze_bn": True,
                  "unfreeze_epoch": 21, "unfreeze_lr_scale": 0.01}}


RECIPES: dict[str, Callable[[], Recipe]] = {
    "quick": quick,
    "paper-imagenet": paper_imagenet,
    "paper-jft": paper_jft,
    "paper-jft-fc": paper_jft_fc,
    "finetune": finetune,
}


# what the quick recipe takes, as measured (docs/getting-started.md): said by `xception --help`,
# `xception train --help` and the README's quick start (a test keeps them equal)
QUICK_TIME = "~30 s on 2 CPU cores"


def list_recipes() -> list[str]:
    return list(RECIPES)


def recipe_summary(name: str) -> str:
    """The first sentence of recipe ``name``'s docstring, as plain text (for ``--help``)."""
    doc = " ".join((RECIPES[name].__doc__ or "").split()).replace("``", "")
    first = doc.split(". ")[0].split(" (")[0].rstrip(".") if doc else name
    return first.split(", ")[0] if len(first) > 72 else first  # one short line


def default_summary() -> str:
    """What a bare ``xception train`` does, from the quick recipe itself (its changes as written:
    building the parser makes no config)."""
    quick = recipe_changes("quick")
    return (f"the quick recipe: {quick['model']['name']} on the embedded {quick['data']['name']}, "
            f"{quick['train']['epochs']} epochs, {QUICK_TIME}")


def recipe_changes(name: str) -> Recipe:
    """What recipe ``name`` changes from the defaults (the first layer of ``xception train``)."""
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; choose one of {list_recipes()}")
    return RECIPES[name]()


def get_recipe(name: str) -> RunConfig:
    """A named recipe: a validated, immutable ``RunConfig`` (change it with ``apply_overrides``)."""
    return RunConfig.from_dict(recipe_changes(name))
