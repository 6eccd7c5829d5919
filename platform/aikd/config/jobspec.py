"""The base of every job spec, and the embedded default that fills what a spec leaves out."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, Field, ValidationError, model_validator

from aikd.config.common import RESOURCE_RENAMES, Resources, TeacherName, TrackingConfig
from aikd.errors import ConfigError
from aikd.spec import Frozen, deep_merge, error_text


class EmbeddedDefault(Frozen):
    """The embedded default's inputs, one set of numbers: synthetic faces -> FR model -> teacher labels.

    No data set or pretrained model can be downloaded on the default machine, so a job
    spec may say ``bootstrap: {root: ...}``: the inputs it needs are built under
    ``root`` where missing (idempotent), and the fields it leaves out come from
    :meth:`stage` (one place for the default's paths, sizes and resources).
    """

    renamed: ClassVar[dict[str, str]] = {k: f"bootstrap.{v}" for k, v in RESOURCE_RENAMES.items()}

    root: str = Field("runs/default", description="URI under which faces/, fr_model/ and labelled/ live")
    identities: int = Field(300, ge=4)
    samples_per_identity: int = Field(10, ge=2)
    seed: int = 0
    image_size: int = Field(64, ge=16)
    fr_epochs: int = Field(10, ge=1)
    teachers: list[TeacherName] = Field(default_factory=lambda: ["serfiq", "crfiqa", "norm"])
    teacher: str = Field("serfiq", description="whose labels the default distillation learns (one of teachers)")
    serfiq_passes: int = Field(50, ge=2)
    resources: Resources = Resources(workers=2, cpus_per_worker=0.5)  # 2 workers + 2 data actors = 2 CPUs

    @model_validator(mode="after")
    def _teacher_is_labelled(self) -> EmbeddedDefault:
        if self.teacher not in self.teachers:
            raise ValueError(f"teacher {self.teacher!r} must be one of the teachers that label the faces: "
                             f"{self.teachers}")
        return self

    def path(self, name: Literal["faces", "fr_model", "labelled"]) -> str:
        from aikd.storage import resolve

        return resolve(self.root).join(name).uri

    def teacher_options(self, teacher: str) -> dict:
        """A built-in teacher's options on the default: its FR model (and SER-FIQ's passes)."""
        extra = {"passes": self.serfiq_passes} if teacher == "serfiq" else {}
        return {"model": self.path("fr_model")} | extra

    def stage(self, kind: str) -> dict:
        """The spec fields of one job kind on the default (a job's own fields override them)."""
        res = self.resources.model_dump()
        data = {"image_size": self.image_size, "seed": self.seed, "resources": res}
        if kind == "fr-train":
            return {"data": data | {"shards": [self.path("faces")], "split_by": "subject_id", "val_fraction": 0.2,
                                    "misalignment": 0.0},
                    # dropout before the embedding: SER-FIQ samples sub-networks through it
                    "out": self.path("fr_model"), "model": "iresnet_tiny", "model_args": {"dropout": 0.4},
                    "epochs": self.fr_epochs, "seed": self.seed, "resources": res}
        if kind == "label":
            return {"shards": [self.path("faces")], "out": self.path("labelled"), "resources": res,
                    "teachers": [{"name": t, "options": self.teacher_options(t)} for t in self.teachers]}
        if kind == "distill":
            return {"data": data | {"shards": [self.path("labelled")], "label": f"q_{self.teacher}",
                                    "misalignment": 3.0, "val_fraction": 0.1},
                    "student": {"weights": self.path("fr_model")}, "engine": {"micro_batch": 32},
                    "resources": res}
        raise ConfigError(f"the embedded default has no {kind!r} stage; valid: fr-train, label, distill")


class JobSpec(Frozen):
    """What every job spec shares: resources, tracking, and the embedded default filling what it leaves out."""

    kind: ClassVar[str] = ""
    renamed: ClassVar[dict[str, str]] = RESOURCE_RENAMES

    resources: Resources = Resources()
    tracking: TrackingConfig = TrackingConfig()

    @model_validator(mode="after")
    def _registering_needs_tracking(self):
        if getattr(self, "register", None) is not None and not self.tracking.enabled:
            raise ValueError("register: needs tracking: registering a model version records it in MLflow "
                             "(set tracking.enabled: true or drop register)")
        return self

    @model_validator(mode="before")
    @classmethod
    def _fill_from_default(cls, data):
        if isinstance(data, dict) and data.get("bootstrap") is not None and "bootstrap" in cls.model_fields:
            default = data["bootstrap"]
            try:
                default = default if isinstance(default, EmbeddedDefault) else EmbeddedDefault.model_validate(default)
            except ValidationError as err:  # raised in here it would lose its path: say bootstrap.<field>
                raise ValueError(error_text(EmbeddedDefault, err, prefix="bootstrap")) from None
            dumped = {k: v.model_dump() if isinstance(v, BaseModel) else v for k, v in data.items()}
            return deep_merge(default.stage(cls.kind), dumped)
        return data
