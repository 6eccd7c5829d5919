"""The sweep job's spec: the searched dimensions, early stopping, the trials."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from aikd.config.common import RegisterConfig, Resources
from aikd.config.jobspec import JobSpec
from aikd.distill.metrics import DIRECTION, PAUC, selectable
from aikd.spec import Frozen, PlainName, distinct


class Dimension(Frozen):
    """One searched field: a range (uniform, loguniform, int, bounds included) or a list of values (choice)."""

    type: Literal["uniform", "loguniform", "int", "choice"]
    low: float | None = None
    high: float | None = None
    values: list | None = None

    @model_validator(mode="after")
    def _shape(self) -> Dimension:
        if self.type == "choice":
            if self.low is not None or self.high is not None:
                raise ValueError("a choice lists values, not low/high")
            if not self.values:
                raise ValueError("a choice needs at least one value, got none")
            distinct([repr(v) for v in self.values], "a choice's values", "each is one option")
            return self
        if self.values is not None:
            raise ValueError(f"a {self.type} range has low and high, not values")
        if self.low is None or self.high is None:
            raise ValueError(f"a {self.type} range needs low and high")
        if self.low > self.high:
            raise ValueError(f"low {self.low:g} > high {self.high:g}")
        if self.type == "loguniform" and self.low <= 0:
            raise ValueError(f"a loguniform range needs low > 0, got {self.low:g}")
        if self.type == "int" and not (float(self.low).is_integer() and float(self.high).is_integer()):
            raise ValueError(f"an int range needs whole bounds, got {self.low:g}..{self.high:g}")
        return self

    @property
    def edges(self) -> list:
        """The values that bound what a trial may get: both ends of a range, every choice."""
        if self.type == "choice":
            return list(self.values)
        return [int(self.low), int(self.high)] if self.type == "int" else [self.low, self.high]


class EarlyStop(Frozen):
    """ASHA: at rungs of ``grace * reduction_factor**k`` validations, stop trials outside the best 1/factor."""

    grace: int = Field(2, ge=1, description="validations (the initial one included) a trial always gets")
    reduction_factor: float = Field(2.0, gt=1)


class SweepConfig(JobSpec):
    """A search over distillation settings: each trial is one distill run, the best student is registered."""

    kind: ClassVar[str] = "sweep"

    name: PlainName = Field(description="the sweep: <storage>/<name>/")
    storage: str = Field(description="URI under which sweeps live; this one is <storage>/<name>/ (disk or s3://)")
    base: str | dict = Field(description="the distill spec every trial starts from: a YAML path/URI or the mapping")
    fixed: dict = Field(default_factory=dict, description="dotted fields set on the base for every trial, "
                        "e.g. max_steps: 200 (as --set would)")
    space: dict[str, Dimension] | None = Field(
        None, description="dotted field -> dimension; default: misalignment, teacher, consistency target, quality "
        "weight, head learning rate, train_last_k (docs/sweeps.md)")
    start_with: list[dict] = Field(default_factory=list, description="trials to run first, as dotted field -> "
                                   "value (e.g. a known good setting, or a grid); the search continues from them")
    metric: str = Field(PAUC["misaligned"], description="validation metric the trials are ranked by")
    mode: Literal["min", "max"] | None = Field(None, description="its direction; default: the metric's own")
    trials: int = Field(8, ge=1)
    concurrency: int | None = Field(None, ge=1, description="trials at once; default: as many as the cluster's "
                                    "CPUs and GPUs fit, from one trial's resources")
    seed: int = 0
    early_stop: EarlyStop | None = Field(EarlyStop(), description="ASHA early stopping; null runs every trial out")
    # a trial's Train workers and decode actors have the base's own resources; this is its driver process
    resources: Resources = Field(Resources(workers=1, cpus_per_worker=0.05),
                                 description="each trial's driver (the Ray Tune function that starts its Train run)")
    register: RegisterConfig | None = Field(None, description="register the best trial's student in MLflow")

    @field_validator("metric")
    @classmethod
    def _selectable(cls, value: str) -> str:
        return selectable(value, "metric")

    @model_validator(mode="after")
    def _consistent(self) -> SweepConfig:
        if self.mode is not None and self.mode != DIRECTION[self.metric]:
            raise ValueError(f"{self.metric} is better when {'lower' if DIRECTION[self.metric] == 'min' else 'higher'}"
                             f": mode must be {DIRECTION[self.metric]}")
        if self.resources.workers != 1 or self.resources.use_gpu:
            raise ValueError("resources is one trial's driver: workers 1 and no GPU (set concurrency for parallel "
                             "trials, and the base's resources for its workers)")
        return self

    @property
    def direction(self) -> Literal["min", "max"]:
        return DIRECTION[self.metric]
