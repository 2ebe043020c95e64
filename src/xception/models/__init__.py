"""The networks: layers, Xception (the paper's Figure 5 as a block table), DeepLab's aligned
variants, the Inception V3 baseline and ``create_model`` by name."""

from .inception import InceptionConfig, InceptionV3
from .layers import SpectrumConv
from .registry import build_model, create_model, list_models, model_config
from .xception import BlockSpec, Xception, XceptionConfig, block_table

__all__ = ["BlockSpec", "InceptionConfig", "InceptionV3", "SpectrumConv", "Xception",
           "XceptionConfig", "block_table", "build_model", "create_model", "list_models",
           "model_config"]
