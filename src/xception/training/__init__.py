"""Training: recipes, ``fit`` (one CPU to torchrun), the train state and its checkpoints, the
step engine, optimizers and schedules, the run log. ``RunConfig`` and ``apply_overrides`` (from
``xception.config``) are handed on here, beside the ``fit`` they feed."""

from ..config import RunConfig, apply_overrides
from .fit import FitResult, fit
from .recipes import get_recipe, list_recipes

__all__ = ["FitResult", "RunConfig", "apply_overrides", "fit", "get_recipe", "list_recipes"]
