"""Weights in and out: the project's safetensors format (config in metadata)."""

from .io import load_model, load_weights, read_metadata, resolve_weights_path, save_weights

__all__ = ["load_model", "load_weights", "read_metadata", "resolve_weights_path", "save_weights"]
