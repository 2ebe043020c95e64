"""torch.hub entry points: ``torch.hub.load("<owner>/xception", "xception")`` or, from a checkout,
``torch.hub.load("/path/to/xception", "xception", source="local")``.

``weights`` takes any file ``xception.load_weights`` reads (project safetensors, Keras .h5, timm .pth);
other keyword arguments override the model config, e.g. ``num_classes=10``.
"""

import os
import sys

dependencies = ["torch", "torchvision", "safetensors"]

_SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "src")
if _SRC not in sys.path:  # a checkout that was not pip-installed
    sys.path.insert(0, _SRC)

from xception import create_model as _create_model  # noqa: E402
from xception import load_weights as _load_weights  # noqa: E402


def _build(name, weights=None, **overrides):
    model = _create_model(name, **overrides)
    if weights is not None:
        _load_weights(model, weights)
    return model


def xception(weights=None, **overrides):
    """Xception as in the paper and Keras (TF "same" padding, BN eps 1e-3), 1000 classes."""
    return _build("xception", weights, **overrides)


def xception41(weights=None, **overrides):
    """DeepLab's aligned Xception-41 (timm's layout); ``output_stride=16`` or 8 for dense tasks."""
    return _build("xception41", weights, **overrides)


def xception65(weights=None, **overrides):
    """DeepLab's aligned Xception-65 (timm's layout)."""
    return _build("xception65", weights, **overrides)


def xception71(weights=None, **overrides):
    """DeepLab's aligned Xception-71 (timm's layout)."""
    return _build("xception71", weights, **overrides)
