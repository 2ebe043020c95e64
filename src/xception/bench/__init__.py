"""The side-by-side benchmark: our model against timm's ``legacy_xception`` and torchvision's
``inception_v3``, timed in one process with the same settings (``timing``), and what it found
(``results``)."""

from .results import Entry, environment, format_table, ratios
from .timing import (
           CONTENDERS,
           DEFAULT_CONTENDERS,
           MODES,
           BenchSettings,
           run_benchmark,
           saved_activation_bytes,
)

__all__ = ["CONTENDERS", "DEFAULT_CONTENDERS", "MODES", "BenchSettings", "Entry", "environment",
           "format_table", "ratios", "run_benchmark", "saved_activation_bytes"]
