"""Building blocks: TensorFlow-"same" padding, the spectrum convolution and the classifier head.

Everything the model and the Inception baseline share lives here; nothing here knows about blocks,
flows or training.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, InputError
from .small_maps import depthwise_conv2d, needs_matmul_path, needs_small_map_path, pointwise_conv2d

PADDINGS: tuple[str, ...] = ("tf_same", "symmetric", "valid")
ORDERS: tuple[str, ...] = ("depthwise_first", "pointwise_first")
ACTIVATIONS: tuple[str | None, ...] = (None, "relu", "elu")


def check_choice(name: str, value: object, choices: tuple) -> None:
    """Raise a ConfigError naming the setting and its valid choices."""
    if value not in choices:
        raise ConfigError(f"{name}={value!r} is not valid; choose one of {', '.join(map(repr, choices))}")


def is_positive_int(value: object) -> bool:
    """A channel width, kernel size, stride, dilation or segment count: an int >= 1, not a bool."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def divisors(number: int) -> list[int]:
    return [d for d in range(1, number + 1) if number % d == 0]


def check_segments(segments: object, channels: Iterable[int], what: str) -> None:
    """The rule for ``segments``: a positive integer dividing every count in ``channels``, the
    channels the spatial (kxk) convs see. ``what`` names those channels in the error.

    ``SpectrumConv`` checks its own; ``XceptionConfig`` checks every one its block table has, so a
    config fails before any weight is built.
    """
    counts = sorted(set(channels))
    not_divided = [count for count in counts if not is_positive_int(segments) or count % segments]
    if not_divided:
        raise ConfigError(f"segments={segments!r} must divide {what}; it does not divide "
                          f"{not_divided}; valid: {divisors(math.gcd(*counts))}")


def check_images(x: torch.Tensor, in_chans: int, min_size: int) -> None:
    """Fail early with a message a user can act on, instead of a shape error deep inside."""
    if x.dim() != 4 or x.shape[1] != in_chans:
        raise InputError(f"expected images shaped (N, {in_chans}, H, W), got {tuple(x.shape)}")
    height, width = x.shape[-2:]
    if height < min_size or width < min_size:
        raise InputError(f"input {height}x{width} is smaller than this model's minimum of "
                         f"{min_size}x{min_size}; resize the images")


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """(before, after) padding of TensorFlow's "same" rule along one spatial dimension.

    TF puts the odd pixel of an odd total *after* the input; PyTorch's symmetric ``padding=k//2``
    cannot express that, which is why stride-2 layers on even inputs differ between the two.
    The arithmetic is the one timm uses (``get_same_padding`` in ``timm/layers/padding.py``, by
    Ross Wightman, Apache-2.0): total = max((ceil(size / stride) - 1) * stride + effective kernel
    - size, 0), split with the smaller half first.
    """
    effective = (kernel - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def static_padding(kernel: int, stride: int, dilation: int, mode: str) -> int | None:
    """Symmetric padding to bake into the layer, or None when it depends on the input size."""
    check_choice("padding", mode, PADDINGS)
    if mode == "valid":
        return 0
    total = (kernel - 1) * dilation
    if mode == "symmetric" or stride == 1 and total % 2 == 0:
        return total // 2
    return None


def pad_same(x: torch.Tensor, kernel: int, stride: int, dilation: int, value: float) -> torch.Tensor:
    """``x`` padded by ``value`` so a conv/pool over it gives TensorFlow's "same" output.

    The same rule as timm's ``pad_same`` (``timm/layers/padding.py``): ``same_padding`` per spatial
    dimension, applied with ``F.pad`` only when non-zero; ``value`` is -inf for max pooling.
    """
    # int(): a traced export (ONNX) bakes the padding for its input size in as constants, instead
    # of recording the floor divisions, which the exporter would turn into truncating ones
    top, bottom = same_padding(int(x.shape[-2]), kernel, stride, dilation)
    left, right = same_padding(int(x.shape[-1]), kernel, stride, dilation)
    if top or bottom or left or right:
        x = F.pad(x, (left, right, top, bottom), value=value)
    return x


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` with a padding *mode*: "tf_same", "symmetric" or "valid".

    Where TF's rule is symmetric for every input size (stride 1) the padding is baked into the conv;
    otherwise it is computed from the input in ``forward``. State-dict keys are those of nn.Conv2d.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 dilation: int = 1, groups: int = 1, bias: bool = False,
                 padding: str = "tf_same") -> None:
        fixed = static_padding(kernel_size, stride, dilation, padding)
        super().__init__(in_channels, out_channels, kernel_size, stride=stride,
                         padding=0 if fixed is None else fixed, dilation=dilation, groups=groups,
                         bias=bias)
        self.pad_mode = padding
        self.dynamic_pad = fixed is None

    def set_padding(self, mode: str) -> None:
        """Switch the padding rule in place (weights untouched), e.g. for weights ported from timm."""
        fixed = static_padding(self.kernel_size[0], self.stride[0], self.dilation[0], mode)
        self.padding = (0, 0) if fixed is None else (fixed, fixed)
        self.pad_mode, self.dynamic_pad = mode, fixed is None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dynamic_pad:
            x = pad_same(x, self.kernel_size[0], self.stride[0], self.dilation[0], 0.0)
        if self.bias is None and needs_small_map_path(x, self.weight, self.groups, self.dilation):
            return depthwise_conv2d(x, self.weight, self.stride, self.padding, self.dilation)
        return super().forward(x)


class PointwiseConv2d(nn.Conv2d):
    """The 1x1 conv of a separable conv: ``nn.Conv2d`` (same weights and state-dict keys) whose CPU
    training on maps of at most 4x4 runs as a matrix product (``small_maps.py`` says why)."""

    def __init__(self, in_channels: int, out_channels: int, bias: bool = False) -> None:
        super().__init__(in_channels, out_channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if needs_matmul_path(x, self.weight):
            return pointwise_conv2d(x, self.weight, self.bias)
        return super().forward(x)


def ceil_mode_padding(size: int, kernel: int, stride: int) -> int | None:
    """The symmetric padding that, with ``ceil_mode=True``, gives TF's "same" windows, or None.

    TF's rule puts the odd pixel of an odd total *after* the input; ceil mode's partial last
    window covers exactly that pixel, and PyTorch ignores its out-of-range part as -inf padding
    would. None where the two rules give other windows (then the input is padded by a copy).
    """
    before, after = same_padding(size, kernel, stride)
    if after - before not in (0, 1) or before > kernel // 2:
        return None
    out = -(-size // stride)
    # PyTorch drops a last window that starts in the right padding; TF's never does
    if (out - 1) * stride - before >= size:
        return None
    return before


class MaxPool2d(nn.Module):
    """3x3 max-pool with a padding mode; TF's "same" pads with -inf, so padding never wins.

    Where TF's padding depends on the input size it is computed without a padded copy of the
    activation (``ceil_mode_padding``): the same windows, so the same outputs and gradients, and
    on CPU no time spent on the copy, its -inf fill and its backward (what that saved:
    benchmarks/RESULTS.md, "Figures moved out of code comments").
    """

    def __init__(self, kernel_size: int = 3, stride: int = 2, padding: str = "tf_same") -> None:
        super().__init__()
        self.kernel_size, self.stride, self.pad_mode = kernel_size, stride, padding
        self.fixed = static_padding(kernel_size, stride, 1, padding)

    def set_padding(self, mode: str) -> None:
        self.fixed = static_padding(self.kernel_size, self.stride, 1, mode)
        self.pad_mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel, stride = self.kernel_size, self.stride
        if self.fixed is not None:
            return F.max_pool2d(x, kernel, stride, self.fixed)
        # int(): a traced export (ONNX) bakes the sizes in as constants (see pad_same)
        pad_rows = ceil_mode_padding(int(x.shape[-2]), kernel, stride)
        pad_columns = ceil_mode_padding(int(x.shape[-1]), kernel, stride)
        if pad_rows is None or pad_columns is None:
            return F.max_pool2d(pad_same(x, kernel, stride, 1, float("-inf")), kernel, stride)
        return F.max_pool2d(x, kernel, stride, padding=(pad_rows, pad_columns), ceil_mode=True)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.pad_mode!r}"


def batch_norm(channels: int, eps: float, momentum: float) -> nn.BatchNorm2d:
    """BatchNorm with Keras' defaults expressed in PyTorch terms (momentum 0.01 == Keras 0.99)."""
    return nn.BatchNorm2d(channels, eps=eps, momentum=momentum)


def activation_layer(name: str | None) -> nn.Module:
    """The module between depthwise and pointwise convs: ReLU, ELU or none (paper Fig. 10)."""
    check_choice("mid_activation", name, ACTIVATIONS)
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "elu":
        return nn.ELU(inplace=True)
    return nn.Identity()


class SpectrumConv(nn.Module):
    """One point of the Inception <-> Xception spectrum: a 1x1 conv and a kxk conv on channel segments.

    ``segments`` is how many independent channel groups the spatial (kxk) conv works on:
    1 is a regular conv, the channel count (the default, ``None``) is a depthwise conv.
    ``order="depthwise_first"`` is the depthwise separable conv Xception uses (spatial, then 1x1);
    ``"pointwise_first"`` is "Extreme Inception" (1x1, then spatial). Between the two ops there is
    nothing by default, as in Xception; ``mid_norm`` adds a BatchNorm and ``mid_activation`` a ReLU or
    ELU, as an Inception module has. Depth multiplier is 1 and there is no bias: BN follows.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 dilation: int = 1, segments: int | None = None, order: str = "depthwise_first",
                 mid_activation: str | None = None, mid_norm: bool = False,
                 padding: str = "tf_same", bias: bool = False, norm_eps: float = 1e-3,
                 norm_momentum: float = 0.01) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels),
                            ("kernel_size", kernel_size), ("stride", stride),
                            ("dilation", dilation)):
            if not is_positive_int(value):
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        check_choice("order", order, ORDERS)
        spatial_channels = in_channels if order == "depthwise_first" else out_channels
        segments = spatial_channels if segments is None else segments
        side = "in_channels" if order == "depthwise_first" else "out_channels"
        check_segments(segments, [spatial_channels],
                       f"the channels the spatial conv sees ({side} for order={order!r})")
        self.order, self.segments = order, segments
        self.spatial = Conv2d(spatial_channels, spatial_channels, kernel_size, stride=stride,
                              dilation=dilation, groups=segments, padding=padding)
        self.mid_norm = (batch_norm(spatial_channels, norm_eps, norm_momentum) if mid_norm
                         else nn.Identity())
        self.mid_act = activation_layer(mid_activation)
        self.pointwise = PointwiseConv2d(in_channels, out_channels, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.order == "depthwise_first":
            return self.pointwise(self.mid_act(self.mid_norm(self.spatial(x))))
        return self.spatial(self.mid_act(self.mid_norm(self.pointwise(x))))

    def extra_repr(self) -> str:
        return f"order={self.order!r}, segments={self.segments}"


class ClassifierHead(nn.Module):
    """Global average pool -> optional FC layers (the paper's JFT 2x4096) -> dropout -> logits.

    Unlike timm's legacy Xception the dropout is really applied. ``num_classes=0`` gives pooled
    features (``nn.Identity`` classifier), as in timm.
    """

    def __init__(self, in_features: int, num_classes: int, fc_layers: tuple[int, ...] = (),
                 dropout: float = 0.0) -> None:
        super().__init__()
        if not isinstance(num_classes, int) or num_classes < 0:
            raise ConfigError(f"num_classes must be an integer >= 0, got {num_classes!r}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout!r}")
        if any(not isinstance(w, int) or w < 1 for w in fc_layers):
            raise ConfigError(f"fc_layers must be positive integers, got {fc_layers!r}")
        self.pool = nn.AdaptiveAvgPool2d(1)
        layers: list[nn.Module] = []
        width = in_features
        for units in fc_layers:
            layers += [nn.Linear(width, units), nn.ReLU(inplace=True)]
            width = units
        self.fc = nn.Sequential(*layers)
        self.num_features = width
        self.drop = nn.Dropout(dropout)
        self.classifier: nn.Module = nn.Identity()
        self.reset(num_classes)

    def reset(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.classifier = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.fc(torch.flatten(self.pool(x), 1))
        return x if pre_logits else self.classifier(self.drop(x))


class HeadMixin:
    """The timm model API shared by Xception and the Inception V3 baseline.

    A model provides ``forward_features``, a ``head`` (``ClassifierHead``) and a frozen dataclass
    ``config`` with a ``num_classes`` field; this adds the rest.
    """

    head: ClassifierHead

    @property
    def num_classes(self) -> int:
        return self.head.num_classes

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head.classifier

    def reset_classifier(self, num_classes: int) -> None:
        self.head.reset(num_classes)
        self.config = dataclasses.replace(self.config, num_classes=num_classes)
