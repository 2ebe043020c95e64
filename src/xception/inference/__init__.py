"""Using saved weights: rebuild the model, evaluate it (on its own data or any other), classify and
embed image files and data sets, in batches that stream through a ``DataLoader``.

``load_for_inference`` (``model``), ``evaluate_saved`` / ``evaluate_data`` (``evaluate``),
``predict_files`` / ``predict_stream`` (``predict``), ``embed_stream`` / ``write_embeddings``
(``embed``); image files and folders are found and read by ``inputs``.
"""

from .embed import POOLS, embed_stream, pooled_features, write_embeddings
from .evaluate import EvalReport, evaluate_data, evaluate_saved, write_eval_report
from .inputs import FoundImages, ImageFiles, find_images
from .model import class_names_of, load_for_inference, preprocess_of
from .predict import predict_files, predict_stream, write_predictions

__all__ = [
    "POOLS", "EvalReport", "FoundImages", "ImageFiles", "class_names_of", "embed_stream",
    "evaluate_data", "evaluate_saved", "find_images", "load_for_inference", "pooled_features",
    "predict_files", "predict_stream", "preprocess_of", "write_embeddings", "write_eval_report",
    "write_predictions",
]
