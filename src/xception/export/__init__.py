"""Exporting a model for other runtimes: ONNX (``onnx_graph``) and ``torch.export`` programs
(``pt2_program``), both for any batch size and, by default, any image size (``graph``), each
checked against the PyTorch model before it is written (``verify``)."""

from .graph import export_graph, same_pad_amounts
from .onnx_graph import INPUT, OUTPUT, export_onnx, verify_onnx, verify_onnx_shapes
from .pt2_program import export_program, export_pt2, verify_pt2
from .verify import Check, compare

__all__ = ["INPUT", "OUTPUT", "Check", "compare", "export_graph", "export_onnx", "export_program",
           "export_pt2", "same_pad_amounts", "verify_onnx", "verify_onnx_shapes", "verify_pt2"]
