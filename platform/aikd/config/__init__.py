"""Typed, frozen job specs, one module per job kind, on the ground floor of :mod:`aikd.spec`.

Every job's spec shares one shape (docs/jobs.md): a ``resources`` section, outputs under
one URI, tracking, and optionally a ``bootstrap`` section that runs it on the embedded
default. The names are gathered here so a caller imports them from one place.
"""

from aikd.config.common import (
    RESOURCE_RENAMES,
    DataConfig,
    ModelName,
    RegisterConfig,
    Resources,
    TeacherName,
    TrackingConfig,
    cpu_only,
)
from aikd.config.distill import (
    DistillConfig,
    EngineConfig,
    ObjectiveConfig,
    OptimConfig,
    StudentConfig,
    ValidationConfig,
)
from aikd.config.evaluate import Condition, EvaluateConfig, FIQASpec
from aikd.config.experiment import ExperimentConfig, ExperimentSweep
from aikd.config.frtrain import FRTrainConfig
from aikd.config.ingest import IngestConfig
from aikd.config.jobspec import EmbeddedDefault, JobSpec
from aikd.config.label import LabelConfig, TeacherSpec
from aikd.config.score import ScoreConfig, ScoreModel
from aikd.config.sweep import Dimension, EarlyStop, SweepConfig
from aikd.spec import (
    PLAIN_NAME,
    PLAIN_NAME_FORM,
    Frozen,
    PlainName,
    deep_merge,
    distinct,
    error_text,
    load_spec,
    read_spec,
    validate,
    with_overrides,
    yaml_problem,
)

__all__ = [
    "PLAIN_NAME", "PLAIN_NAME_FORM", "RESOURCE_RENAMES", "Condition", "DataConfig", "Dimension", "DistillConfig",
    "EarlyStop", "EmbeddedDefault", "EngineConfig", "EvaluateConfig", "ExperimentConfig", "ExperimentSweep",
    "FIQASpec", "FRTrainConfig", "Frozen", "IngestConfig", "JobSpec", "LabelConfig", "ModelName", "ObjectiveConfig",
    "OptimConfig",
    "PlainName", "RegisterConfig", "Resources", "ScoreConfig", "ScoreModel", "StudentConfig", "SweepConfig",
    "TeacherName", "TeacherSpec", "TrackingConfig", "ValidationConfig", "cpu_only", "deep_merge", "distinct",
    "error_text", "load_spec", "read_spec", "validate", "with_overrides", "yaml_problem",
]
