"""torchvision's Inception V3, the paper's baseline, with the same head and API as our Xception."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..errors import ConfigError
from .layers import ClassifierHead, HeadMixin, check_images, is_positive_int


@dataclass(frozen=True)
class InceptionConfig:
    """The head options Xception has; the body is torchvision's, without the auxiliary tower."""

    num_classes: int = 1000
    in_chans: int = 3
    fc_layers: tuple[int, ...] = ()
    dropout: float = 0.0
    min_input_size: int = 75  # torchvision's rule

    def __post_init__(self) -> None:
        if not is_positive_int(self.in_chans):
            raise ConfigError(f"in_chans must be a positive integer, got {self.in_chans!r}")

    def to_dict(self) -> dict:
        return asdict(self)


class InceptionV3(HeadMixin, nn.Module):
    """Inception V3 body (torchvision, ``aux_logits=False``) + our ``ClassifierHead``."""

    def __init__(self, config: InceptionConfig | None = None) -> None:
        super().__init__()
        # imported here, not at the top: torchvision is slow to import (benchmarks/RESULTS.md,
        # "Figures moved out of code comments"), and importing the models should not pay for it
        from torchvision.models import inception_v3

        self.config = config = config or InceptionConfig()
        net = inception_v3(weights=None, aux_logits=False, init_weights=True)
        if config.in_chans != 3:
            stem = net.Conv2d_1a_3x3.conv
            net.Conv2d_1a_3x3.conv = nn.Conv2d(config.in_chans, stem.out_channels, 3, stride=2,
                                               bias=False)
        # torchvision's children are registered in forward order; keep the body, drop its head
        head = {"AuxLogits", "avgpool", "dropout", "fc"}
        self.body = nn.Sequential(*(module for name, module in net.named_children()
                                    if name not in head))
        self.num_features = net.fc.in_features
        self.head = ClassifierHead(self.num_features, config.num_classes, config.fc_layers,
                                   config.dropout)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        check_images(x, self.config.in_chans, self.config.min_input_size)
        return self.body(x)

