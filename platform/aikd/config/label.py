"""The label job's spec."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, field_validator

from aikd.config.common import TeacherName
from aikd.config.jobspec import EmbeddedDefault, JobSpec
from aikd.spec import Frozen, PlainName, distinct


class TeacherSpec(Frozen):
    """One teacher of a label job: registry name, options, and the column it writes."""

    name: TeacherName
    label: PlainName | None = Field(None, description="column suffix: writes q_<label> (default: the teacher name)")
    options: dict = Field(default_factory=dict, description="teacher options, e.g. model, passes")

    @property
    def column(self) -> str:
        return f"q_{self.label or self.name}"


class LabelConfig(JobSpec):
    """A label job: face shards in, the same shards plus one column per teacher out."""

    kind: ClassVar[str] = "label"

    shards: list[str] = Field(min_length=1)
    out: str
    teachers: list[TeacherSpec] = Field(min_length=1)
    batch_size: int = Field(256, ge=1, description="rows aligned and scored at once")
    bootstrap: EmbeddedDefault | None = Field(None, description="label the embedded default's faces")

    @field_validator("teachers")
    @classmethod
    def _distinct_columns(cls, teachers: list[TeacherSpec]) -> list[TeacherSpec]:
        distinct([t.column for t in teachers], "teachers' columns", "set 'label' to tell them apart")
        return teachers
