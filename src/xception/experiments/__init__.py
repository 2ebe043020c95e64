"""One-command experiments: the paper's ablations and its open questions, with tables and plots.

``run("residual", seeds=5)`` trains every variant under the same budget and seeds and writes, into
the output folder: ``results.md`` / ``results.csv`` (mean and 95% CI per variant), ``curves.png``,
``summary.png``, ``effects.png`` (and ``cost.png`` / ``benefit.png`` where they apply),
``report.md`` (declared tests, CIs, verdict words, confounds) and ``runs.jsonl`` (every run).

The experiments are a registry (``definitions.EXPERIMENTS``); ``runner`` runs one, ``report``
writes what it found. This module only re-exports.
"""

from __future__ import annotations

from .definitions import EXPERIMENTS, NAMES, Experiment, get_experiment
from .runner import base_config, run

__all__ = ["EXPERIMENTS", "NAMES", "Experiment", "base_config", "get_experiment", "run"]
