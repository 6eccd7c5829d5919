"""The sections job specs share: resources, data, tracking, registration, component names."""

from __future__ import annotations

import re
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, Field, field_validator

from aikd.errors import ComponentError, ConfigError
from aikd.spec import Frozen, PlainName, distinct


def registered_model(name: str) -> str:
    """A model name the model registry holds (a spec names components; it never imports them)."""
    from aikd.models.registry import model_info

    try:
        model_info(name)
    except ComponentError as err:
        raise ValueError(str(err)) from None
    return name


def registered_teacher(name: str) -> str:
    """A teacher name the teacher registry holds."""
    from aikd.teachers.base import list_teachers

    valid = list_teachers()
    if name not in valid:
        raise ValueError(f"unknown teacher {name!r}; valid: {', '.join(valid)}")
    return name


def registered_detector(name: str) -> str:
    """A face detector name the detector registry holds."""
    from aikd.detect.base import list_detectors

    valid = list_detectors()
    if name not in valid:
        raise ValueError(f"unknown detector {name!r}; valid: {', '.join(valid)}")
    return name


ModelName = Annotated[str, AfterValidator(registered_model)]
TeacherName = Annotated[str, AfterValidator(registered_teacher)]
DetectorName = Annotated[str, AfterValidator(registered_detector)]


class DetectorSpec(Frozen):
    """A face detector by name, with its options (``aikd components`` lists them)."""

    name: DetectorName = Field("mtcnn", description="detector registry name")
    options: dict = Field(default_factory=dict, description="detector options (min_face_size, thresholds, ...)")


class Resources(Frozen):
    """What each worker (Ray Train) or actor (Ray Data) of a job asks Ray for.

    The device follows what Ray gave: a worker given a GPU runs on it, one given none
    runs on the CPU whatever the machine has.
    """

    workers: int = Field(2, ge=1, description="training workers or actors")
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float = Field(0.0, ge=0, description="0: CPU only; 1: one GPU each; fractions share one")
    custom: dict[str, float] = Field(
        default_factory=dict, description="custom Ray resources each worker asks for, e.g. {gpu_node: 0.01} to "
        "keep workers on the nodes started with --resources '{\"gpu_node\": 1}'")
    placement: Literal["pack", "spread", "strict_spread"] = Field(
        "pack", description="pack: fill a node first; spread: across nodes where possible; strict_spread: one "
        "worker per node (Ray Train's placement group strategy; actors: spread for both spread kinds)")

    @field_validator("custom")
    @classmethod
    def _custom_names(cls, custom: dict[str, float]) -> dict[str, float]:
        for name, amount in custom.items():
            if name in ("CPU", "GPU", "memory") or amount <= 0:
                raise ValueError(f"custom resource {name}: {amount}: give a custom name (CPU and GPU have their "
                                 "own fields) and an amount > 0")
        return custom

    @property
    def use_gpu(self) -> bool:
        return self.gpus_per_worker > 0

    @property
    def threads(self) -> int:
        """Torch threads of a CPU worker: the CPUs it holds (at least one)."""
        return max(1, int(self.cpus_per_worker))


def cpu_only(resources: Resources, field: str) -> Resources:
    """Decode/warp actors run on CPUs: a GPU asked for there is refused, naming the field to fix."""
    if resources.use_gpu:
        raise ValueError(f"decode/warp actors run on CPUs: set {field}.gpus_per_worker: 0")
    return resources


# the spellings jobs used before they shared one Resources section
RESOURCE_RENAMES = {"workers": "resources.workers", "worker_cpus": "resources.cpus_per_worker",
                    "cpus_per_worker": "resources.cpus_per_worker", "use_gpu": "resources.gpus_per_worker"}


class DataConfig(Frozen):
    """Where the faces are and how the training pipeline prepares them."""

    renamed: ClassVar[dict[str, str]] = {k: f"data.{v}" for k, v in RESOURCE_RENAMES.items()}

    shards: list[str] = Field(min_length=1, description="URIs of face shard prefixes or files")
    label: str | None = Field(None, description="quality label column (e.g. q_serfiq); None for none")
    image_size: int = Field(112, ge=16, le=512, description="aligned output side; template scaled to it")
    misalignment: float = Field(3.0, ge=0.0, description="uniform landmark noise bound (AI-KD: 3 px)")
    misalignment_relative: bool = Field(False, description="misalignment as a fraction of inter-ocular distance")
    val_fraction: float = Field(0.01, ge=0.0, lt=1.0, description="share held out for validation")
    split_by: Literal["image_id", "subject_id"] = Field(
        "image_id", description="hold out images, or whole identities (FR verification needs unseen people)")
    misaligned_view: bool = Field(True, description="make the misaligned twin of training rows")
    val_misaligned: bool = Field(False, description="validation rows also get a misaligned twin (fixed noise)")
    seed: int = 0
    batch_size: int = Field(256, ge=1, description="rows per decode + warp call (and per output block)")
    resources: Resources = Field(Resources(), description="decode/warp actors (each keeps tasks queued)")

    def require_input_size(self, size: int, model: str) -> None:
        """The pipeline must warp to the side the model takes (its card or registry entry says which)."""
        if self.image_size != size:
            raise ConfigError(f"data.image_size is {self.image_size} but {model} takes {size}x{size}: "
                              f"set data.image_size: {size}")

    @field_validator("label")
    @classmethod
    def _label_is_a_column(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("q_"):
            raise ValueError(f"label must name a quality column 'q_<teacher>', got {value!r}")
        return value

    @field_validator("resources")
    @classmethod
    def _decoding_runs_on_cpus(cls, value: Resources) -> Resources:
        return cpu_only(value, "data.resources")


class TrackingConfig(Frozen):
    """Where a job records its MLflow run (docs/tracking.md)."""

    enabled: bool = Field(True, description="record this job as an MLflow run")
    uri: str | None = Field(None, description="tracking + registry URI; default: MLFLOW_TRACKING_URI, else "
                            "a SQLite file runs/mlflow.db (artifacts in runs/mlartifacts/)")
    experiment: str | None = Field(None, description="MLflow experiment; default: aikd-<job kind>")


class RegisterConfig(Frozen):
    """Register the model a job made as a new version in MLflow's Model Registry."""

    name: PlainName = Field(description="registered model name")
    aliases: list[str] = Field(default_factory=lambda: ["candidate"], description="aliases moved to the new version")
    description: str | None = Field(None, description="added to the version's generated description")

    @field_validator("aliases")
    @classmethod
    def _alias_names(cls, values: list[str]) -> list[str]:
        bad = [a for a in values if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", a) or re.fullmatch(r"v\d+", a)]
        if bad:
            raise ValueError(f"aliases are letters, digits, '_' and '-', not 'v<number>': got {bad}")
        distinct(values, "aliases", "each names one version")
        return values
