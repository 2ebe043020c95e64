"""Workarounds for bugs of particular library versions, in one named place.

Each workaround is a constant or function whose name or docstring says which library version it
works around, so that on an upgrade every one of them can be checked and dropped where the bug
is gone. This module imports nothing from ``xception``: it sits at the bottom of the import graph,
and anything may import it.
"""

from __future__ import annotations

ONEDNN_MIN_CONV_CHANNELS = 8
"""torch 2.14.1 (its bundled oneDNN): the weight gradient of a channels_last 1x1 stride-2
convolution with fewer than this many input channels corrupts the heap (abort: "double free or
corruption") when it runs on one thread of an AMD EPYC CPU. Code that chooses channel widths
(the experiments' width scaling) keeps every width at or above it."""
