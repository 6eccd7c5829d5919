"""The evaluate job's spec and its alignment conditions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from aikd.config.common import DetectorSpec, TeacherName
from aikd.config.jobspec import JobSpec
from aikd.spec import Frozen, distinct


class FIQASpec(Frozen):
    """One FIQA model under evaluation: a teacher by name, or a distilled student's model dir."""

    name: str = Field(description="display name in tables and plots")
    teacher: TeacherName | None = Field(None, description="teacher registry name (scored on each condition's crops)")
    options: dict = Field(default_factory=dict, description="teacher options")
    student: str | None = Field(None, description="a student model dir (a run's best/) or models:/name@alias")

    @model_validator(mode="after")
    def _one_source(self) -> FIQASpec:
        if (self.teacher is None) == (self.student is None):
            raise ValueError(f"model {self.name!r}: give exactly one of 'teacher' or 'student'")
        return self


@dataclass(frozen=True)
class Condition:
    """One evaluation condition, carried as typed values so no strength is ever parsed back out of a name.

    ``index`` is the strength's position in ``misalignment``: it seeds the noise, so
    results stay the same whatever the strength's printed form.
    """

    kind: Literal["aligned", "misaligned", "box", "detected"]
    strength: float | None = None
    index: int = 0

    def __post_init__(self):
        if (self.kind == "misaligned") != (self.strength is not None):
            raise ValueError(f"a misaligned condition, and only it, has a strength: got {self!r}")

    @property
    def name(self) -> str:
        """Display name and column / file key: ``aligned``, ``misaligned_<strength:g>``, ``box``, ``detected``."""
        return f"misaligned_{self.strength:g}" if self.kind == "misaligned" else self.kind


class EvaluateConfig(JobSpec):
    """EDC / pAUC of FIQA models under alignment conditions, with an FR model scoring comparisons."""

    kind: ClassVar[str] = "evaluate"

    shards: list[str] = Field(min_length=1)
    out: str
    fr_model: str = Field(description="FR model dir (or models:/ URI) whose embeddings score the comparisons")
    models: list[FIQASpec] = Field(min_length=1)
    misalignment: list[float] = Field(default_factory=lambda: [3.0], description="strengths, one condition each")
    misalignment_relative: bool = False
    box: bool = Field(True, description="also evaluate box-cropped faces (no landmarks)")
    box_margin: float = Field(0.0, ge=0)
    detected: DetectorSpec | None = Field(
        None, description="also evaluate faces aligned by this detector's own landmarks (condition 'detected'); "
        "a face it does not find is rejected under every condition, so the conditions stay paired")
    seed: int = 0
    fmr: list[float] = Field(default_factory=lambda: [1e-3])
    pauc_limits: list[float] = Field(default_factory=lambda: [0.2, 0.3])
    pair_quality: Literal["min", "mean"] = "min"
    mode: Literal["fixed", "reestimated"] = "fixed"
    max_mated: int = Field(100_000, ge=1)
    non_mated: int = Field(1_000_000, ge=1)
    pairs_file: str | None = Field(None, description="LFW pairs.txt or CSV; default: pairs built from subject ids")
    batch_size: int = Field(256, ge=1)
    ci_resamples: int = Field(1000, ge=0, description="identity resamples (bootstrap) behind each pAUC's interval; "
                              "0: no intervals")
    ci_level: float = Field(0.95, gt=0, lt=1, description="coverage of the intervals")
    compare: list[tuple[str, str]] = Field(
        default_factory=list, description="pairs of model names [a, b]: the paired difference a - b in pAUC with its "
        "interval and a verdict (better, worse, no detectable difference) per condition")

    @property
    def conditions(self) -> list[Condition]:
        """Every condition of the evaluation, in report order."""
        out = [Condition("aligned")]
        out += [Condition("misaligned", float(s), k) for k, s in enumerate(self.misalignment)]
        return out + ([Condition("box")] if self.box else []) + ([Condition("detected")] if self.detected else [])

    @field_validator("misalignment")
    @classmethod
    def _one_name_per_strength(cls, values: list[float]) -> list[float]:
        # a condition's name keys its columns and files: 0.03333333 and 0.033333334 both print 0.0333333
        names = [Condition("misaligned", float(s), k).name for k, s in enumerate(values)]
        distinct(names, "condition names", "strengths must differ in 6 digits")
        return values

    @field_validator("fmr")
    @classmethod
    def _fmr_is_a_rate(cls, values: list[float]) -> list[float]:
        if not values or not all(0 < v < 1 for v in values):
            raise ValueError(f"fmr values must be in (0, 1), got {values}")
        return values

    @field_validator("pauc_limits")
    @classmethod
    def _limits_are_fractions(cls, values: list[float]) -> list[float]:
        if not values or not all(0 < v <= 1 for v in values):
            raise ValueError(f"pauc_limits must be in (0, 1], got {values}")
        return values

    @field_validator("models")
    @classmethod
    def _distinct_names(cls, models: list[FIQASpec]) -> list[FIQASpec]:
        distinct([m.name for m in models], "model names", "they label tables and plots")
        return models

    @model_validator(mode="after")
    def _comparisons_name_models(self) -> EvaluateConfig:
        names = [m.name for m in self.models]
        for a, b in self.compare:
            for name in (a, b):
                if name not in names:
                    raise ValueError(f"compare: {name!r} is not a model name; models: {names}")
            if a == b:
                raise ValueError(f"compare: [{a!r}, {b!r}] compares a model with itself")
        if self.compare and not self.ci_resamples:
            raise ValueError("compare needs intervals: set ci_resamples above 0")
        if self.ci_resamples and self.mode != "fixed":
            raise ValueError("intervals are computed for mode: fixed; set ci_resamples: 0 for reestimated")
        return self
