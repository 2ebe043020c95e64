"""The vocabulary of an experiment: the variants it trains, the tests it declares before the
runs, and the experiment itself (``definitions.py`` and ``versus.py`` build them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Variant:
    """One network (and, where an experiment varies them, its own run settings) to train."""

    name: str
    overrides: dict[str, Any] = field(default_factory=dict)  # fields of the model's config
    # other run settings, as typed changes ({"model": {"name": ...}, "data": {...}}); a variant
    # that names another model than the budget's takes only its own ``overrides``
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Test:
    """One pre-declared comparison on per-seed values paired by seed.

    ``a``/``b``: variant names; the effect is a - b. A trend test gives ``a`` as the variants
    along an ordered factor (``levels``, e.g. log2 of a ratio) and, optionally, ``b`` as the
    same number of baseline variants, making the per-level value a - b (a benefit).
    ``claim``: "greater" (the effect is > 0) or "equal" (|effect| < the experiment's margin,
    claimed only through an equivalence test). ``primary`` tests decide the headline verdict
    and form one Holm family; the others form a second family."""

    label: str
    a: str | tuple[str, ...]
    b: str | tuple[str, ...] | None = None
    claim: str = "greater"
    metric: str = "final_top1"          # or "auc": mean val top-1 over the epochs
    primary: bool = True
    levels: tuple[float, ...] = ()      # a trend test when given

    @property
    def is_trend(self) -> bool:
        return bool(self.levels)


@dataclass(frozen=True)
class Experiment:
    name: str
    question: str
    claim: str
    variants: tuple[Variant, ...]
    tests: tuple[Test, ...] = ()
    confounds: str = ""
    margin: float = 0.5                 # points: equivalence margin of "equal" claims
    # (a, b) variant pairs whose per-seed gaps a - b form a two-factor design (versus: model x
    # size); the omnibus is then the main effect (the mean gap) and the interaction (do the
    # gaps differ between the pairs?) instead of one ANOVA over every variant
    pairs: tuple[tuple[str, str], ...] = ()
    declarations: tuple[str, ...] = ()  # further lines of the report's "Declared" section
    # (label, variant): networks timed side by side in one process (training images/s)
    side_by_side: tuple[tuple[str, str], ...] = ()
    budget_reason: str = ""             # why this budget, where not the dataset's default one
    # the benefit plot's ordered factor: its name and the tick label at each trend level
    factor: str = "bottleneck ratio"
    factor_ticks: tuple[str, ...] = ()
    # runs the variants start from, one per seed (a variant's train.init "@<stage name>")
    stages: tuple[Variant, ...] = ()

    @property
    def primary_metric(self) -> str:
        return next(t.metric for t in self.tests if t.primary)
