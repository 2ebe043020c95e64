"""xception: Xception (Chollet, CVPR 2017) in PyTorch, exactly as the paper and Keras define it.

The public API: ``create_model``, the config dataclasses, the spectrum layer, weights I/O.
"""

from .errors import (
    ConfigError,
    DataError,
    InputError,
    WeightsError,
    WeightsNotFoundError,
    XceptionError,
)
from .fast import fuse_model, optimize_for_inference
from .models.inception import InceptionConfig, InceptionV3
from .models.layers import SpectrumConv
from .models.registry import create_model, list_models, model_config
from .models.xception import BlockSpec, Xception, XceptionConfig, block_table
from .weights import load_model, load_weights, save_weights

__version__ = "0.1.0"

__all__ = [
    "BlockSpec", "ConfigError", "DataError", "InceptionConfig", "InceptionV3", "InputError",
    "SpectrumConv", "WeightsError", "WeightsNotFoundError", "Xception", "XceptionConfig",
    "XceptionError", "block_table", "create_model", "fuse_model", "list_models", "load_model",
    "load_weights", "model_config", "optimize_for_inference", "save_weights",
]
