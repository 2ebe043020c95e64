"""xception: Xception (Chollet, CVPR 2017) in PyTorch, exactly as the paper and Keras define it.

The public API: ``create_model``, the config dataclasses, the spectrum layer, weights I/O.

Names are resolved lazily (PEP 562), so ``import xception`` costs torch only: torchvision,
safetensors, triton and the plotting libraries load when a function that needs them runs, which
keeps the command line and worker processes quick to start.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the submodule that defines it
_EXPORTS: dict[str, str] = {
    "ConfigError": ".errors", "DataError": ".errors", "InputError": ".errors",
    "OutputError": ".errors", "TrainingError": ".errors", "WeightsError": ".errors",
    "WeightsNotFoundError": ".errors", "XceptionError": ".errors",
    "fuse_model": ".fast.fuse", "optimize_for_inference": ".fast.optimize",
    "InceptionConfig": ".models.inception", "InceptionV3": ".models.inception",
    "SpectrumConv": ".models.layers",
    "create_model": ".models.registry", "list_models": ".models.registry",
    "model_config": ".models.registry",
    "BlockSpec": ".models.xception", "Xception": ".models.xception",
    "XceptionConfig": ".models.xception", "block_table": ".models.xception",
    "load_model": ".weights.load", "load_weights": ".weights.load", "save_weights": ".weights.native",
}

__all__ = [
    "BlockSpec", "ConfigError", "DataError", "InceptionConfig", "InceptionV3", "InputError",
    "OutputError", "SpectrumConv", "TrainingError", "WeightsError", "WeightsNotFoundError",
    "Xception", "XceptionConfig", "XceptionError", "block_table", "create_model", "fuse_model",
    "list_models", "load_model", "load_weights", "model_config", "optimize_for_inference",
    "save_weights",
]

if TYPE_CHECKING:  # what type checkers and IDEs see; at runtime __getattr__ imports on first use
    from .errors import (
        ConfigError,
        DataError,
        InputError,
        OutputError,
        TrainingError,
        WeightsError,
        WeightsNotFoundError,
        XceptionError,
    )
    from .fast.fuse import fuse_model
    from .fast.optimize import optimize_for_inference
    from .models.inception import InceptionConfig, InceptionV3
    from .models.layers import SpectrumConv
    from .models.registry import create_model, list_models, model_config
    from .models.xception import BlockSpec, Xception, XceptionConfig, block_table
    from .weights.load import load_model, load_weights
    from .weights.native import save_weights


def __getattr__(name: str) -> Any:
    """Import the submodule that defines ``name`` on first access and cache the result."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
