"""Weights in and out: the project's safetensors, Keras and timm/Cadene imports, conversion.

``load_weights``/``load_model`` accept every supported format (detected from the file's bytes);
``save_weights`` writes the project's safetensors with the model config in its metadata.
"""

from .load import Source, convert, import_weights, load_model, load_weights, read_source
from .native import read_metadata, resolve_weights_path, save_weights

__all__ = ["Source", "convert", "import_weights", "load_model", "load_weights", "read_metadata",
           "read_source", "resolve_weights_path", "save_weights"]
