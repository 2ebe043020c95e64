"""Datasets: embedded digits, CIFAR-10/100, ImageFolder trees, multi-label manifests, image
preprocessing and the loaders that feed training and evaluation."""

from .build import DatasetInfo, Splits, build_datasets, build_splits, resolve_data_arg
from .builtin import load_digits_images, split_indices
from .datasets import ImageDataset
from .images import BadSample
from .loading import Batch, Collate, EvalBatches, TrainBatches, make_loader
from .preprocess import Preprocess, load_image
from .section import DataSection

__all__ = [
    "BadSample", "Batch", "Collate", "DataSection", "DatasetInfo", "EvalBatches", "ImageDataset",
    "Preprocess", "Splits", "TrainBatches", "build_datasets", "build_splits", "load_digits_images",
    "load_image", "make_loader", "resolve_data_arg", "split_indices",
]
