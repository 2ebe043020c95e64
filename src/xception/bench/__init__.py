"""The side-by-side benchmark: our model against timm's ``legacy_xception`` and torchvision's
``inception_v3``, timed in one process with the same settings, and its report."""

from .report import environment, format_table, ratios
from .runner import (
           CONTENDERS,
           DEFAULT_CONTENDERS,
           MODES,
           BenchSettings,
           Entry,
           run_benchmark,
           saved_activation_bytes,
)

__all__ = ["CONTENDERS", "DEFAULT_CONTENDERS", "MODES", "BenchSettings", "Entry", "environment",
           "format_table", "ratios", "run_benchmark", "saved_activation_bytes"]
