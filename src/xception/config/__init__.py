"""The run configuration: the schema (``sections``), a typed loader (``loader``), the rules a
run's settings obey (``rules``) and the ``--set`` grammar and typed changes (``overrides``)."""

from .loader import read_config_file
from .overrides import apply_overrides, merge_changes, parse_assignments, with_changes
from .rules import fit_to_data
from .sections import (
    DataSection,
    ModelConfig,
    ModelSection,
    OptimizerSection,
    RunConfig,
    ScheduleSection,
    TrainSection,
)

__all__ = ["DataSection", "ModelConfig", "ModelSection", "OptimizerSection", "RunConfig",
           "ScheduleSection", "TrainSection", "apply_overrides", "fit_to_data", "merge_changes",
           "parse_assignments", "read_config_file", "with_changes"]
