"""The experiment job's spec: teachers x variants x seeds on the embedded default."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from aikd.config.common import Resources, TeacherName
from aikd.config.jobspec import EmbeddedDefault, JobSpec
from aikd.distill.metrics import DIRECTION, PAUC, selectable
from aikd.spec import PLAIN_NAME, PLAIN_NAME_FORM, Frozen, PlainName


class ExperimentSweep(Frozen):
    """A small sweep whose best setting becomes the experiment's variant ``sweep-best``."""

    teacher: TeacherName = Field("serfiq", description="the teacher the sweep searches with (its label is fixed)")
    trials: int = Field(4, ge=1)
    fixed: dict = Field(default_factory=dict, description="dotted fields every trial shares, e.g. epochs: 1")
    metric: str = PAUC["misaligned"]
    mode: Literal["min", "max"] = "min"

    @model_validator(mode="after")
    def _selectable(self) -> ExperimentSweep:  # checked here, not when the sweep starts after the distill runs
        selectable(self.metric, "metric")
        if self.mode != DIRECTION[self.metric]:
            raise ValueError(f"{self.metric} is better when {'lower' if DIRECTION[self.metric] == 'min' else 'higher'}"
                             f": mode must be {DIRECTION[self.metric]}")
        return self


class ExperimentConfig(JobSpec):
    """Teacher vs student over teachers, ablations and seeds on the embedded default (docs/results.md).

    Each (teacher, variant, seed) is a distill run on the default's training faces; one
    evaluation on faces of new identities scores every teacher and student on the same
    bootstrap resamples, so each student's paired difference to its teacher, averaged
    over seeds, gets an interval.
    """

    kind: ClassVar[str] = "experiment"

    name: PlainName
    root: str = Field(description="URI under which runs, the sweep, the evaluation and the tables go")
    default: EmbeddedDefault = Field(description="the embedded default's inputs (built under its root if missing)")
    teachers: list[str] = Field(default_factory=lambda: ["serfiq", "crfiqa", "norm"], min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    distill: dict = Field(default_factory=dict, description="dotted fields every distill run shares")
    variants: dict[str, dict] = Field(description="variant name -> dotted fields on top of `distill` ({}: AI-KD)")
    sweep: ExperimentSweep | None = Field(None, description="add the variant sweep-best, found by a sweep")
    eval_identities: int = Field(100, ge=4, description="new identities the evaluation faces are drawn from")
    eval_samples_per_identity: int = Field(10, ge=2)
    misalignment: list[float] = Field(default_factory=lambda: [3.0, 6.0])
    fmr: list[float] = Field(default_factory=lambda: [1e-3, 1e-2])
    non_mated: int = Field(200_000, ge=1)
    ci_resamples: int = Field(1000, ge=100)
    resources: Resources = Field(Resources(workers=2, cpus_per_worker=0.5), description="the evaluation's actors "
                                 "(each distill run has the embedded default's resources)")

    @property
    def bootstrap(self) -> EmbeddedDefault:
        """The inputs the job shell builds before the experiment: the embedded default's."""
        return self.default

    @model_validator(mode="after")
    def _teachers_are_labelled(self) -> ExperimentConfig:
        missing = sorted(set(self.teachers) - set(self.default.teachers))
        if missing:
            raise ValueError(f"teachers {missing} are not labelled by the default (default.teachers: "
                             f"{self.default.teachers})")
        if self.sweep is not None and "sweep-best" in self.variants:
            raise ValueError("variant name sweep-best is the sweep's: rename yours")
        if self.sweep is not None and self.sweep.teacher not in self.default.teachers:
            raise ValueError(f"sweep.teacher {self.sweep.teacher!r} is not labelled by the default "
                             f"(default.teachers: {self.default.teachers})")
        return self

    @field_validator("variants")
    @classmethod
    def _variant_names(cls, variants: dict[str, dict]) -> dict[str, dict]:
        for name in variants:  # a variant names its runs' directories: <root>/distill/<teacher>-<variant>-s<seed>
            if not PLAIN_NAME.fullmatch(name):
                raise ValueError(f"variant names must be {PLAIN_NAME_FORM}, got {name!r}")
        return variants
