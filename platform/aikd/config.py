"""Typed, frozen job configuration, one model per concern, loaded from YAML.

Unknown keys are rejected and every error names the field, so a typo in a job spec is
a one-line message instead of a silently new key.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


def load_spec(uri: str, model: type[BaseModel], overrides: dict | None = None) -> BaseModel:
    """Read a YAML job spec from any URI and validate it; errors name the field and the file."""
    import yaml

    from aikd.storage import resolve

    location = resolve(uri)
    if not location.exists():
        raise FileNotFoundError(f"job spec not found: {location.uri}")
    try:
        data = yaml.safe_load(location.read_text()) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{location.uri}: not valid YAML ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{location.uri}: a job spec is a mapping of fields, got {type(data).__name__}")
    data.pop("job", None)  # the job kind, read by `aikd run`
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    try:
        return model.model_validate(data)
    except ValidationError as err:
        lines = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()]
        raise ValueError(f"{location.uri}: invalid {model.__name__}: " + "; ".join(lines)) from None


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DataConfig(Frozen):
    """Where the faces are and how the training pipeline prepares them."""

    shards: list[str] = Field(min_length=1, description="URIs of face shard prefixes or files")
    label: str | None = Field(None, description="quality label column (e.g. q_serfiq); None for none")
    image_size: int = Field(112, ge=16, le=512, description="aligned output side; template scaled to it")
    misalignment: float = Field(3.0, ge=0.0, description="uniform landmark noise bound (AI-KD: 3 px)")
    misalignment_relative: bool = Field(False, description="misalignment as a fraction of inter-ocular distance")
    val_fraction: float = Field(0.01, ge=0.0, lt=1.0, description="share held out for validation")
    split_by: Literal["image_id", "subject_id"] = Field(
        "image_id", description="hold out images, or whole identities (FR verification needs unseen people)")
    misaligned_view: bool = Field(True, description="make the misaligned twin of training rows")
    seed: int = 0
    batch_size: int = Field(256, ge=1, description="rows per decode + warp call (and per output block)")
    workers: int = Field(2, ge=1, description="decode/warp actors (each keeps tasks queued: no scheduling gaps)")
    worker_cpus: float = Field(1.0, gt=0.0, description="CPUs reserved per decode/warp actor")

    @field_validator("label")
    @classmethod
    def _label_is_a_column(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("q_"):
            raise ValueError(f"label must name a quality column 'q_<teacher>', got {value!r}")
        return value


class FRTrainConfig(Frozen):
    """Face recognition pretraining: a backbone plus a margin head on aligned shards."""

    data: DataConfig
    out: str = Field(description="URI of the model directory to write (safetensors + card)")
    model: str = "iresnet_tiny"
    model_args: dict = Field(default_factory=dict, description="create_model overrides, e.g. width")
    head: Literal["cosface", "arcface"] = "cosface"
    head_scale: float = Field(32.0, gt=0)
    head_margin: float | None = Field(None, description="None: the head's own default (0.35 / 0.5)")
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(64, ge=2, description="per worker")
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    workers: int = Field(2, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0)
    log_every: int = Field(20, ge=1, description="steps between progress lines")
    seed: int = 0

    @field_validator("data")
    @classmethod
    def _held_out_identities(cls, data: DataConfig) -> DataConfig:
        if data.split_by != "subject_id":
            raise ValueError("FR training holds out whole identities: set data.split_by: subject_id")
        return data


class TeacherSpec(Frozen):
    """One teacher of a label job: registry name, options, and the column it writes."""

    name: str
    label: str | None = Field(None, description="column suffix: writes q_<label> (default: the teacher name)")
    options: dict = Field(default_factory=dict, description="teacher options, e.g. model, passes")

    @property
    def column(self) -> str:
        return f"q_{self.label or self.name}"


class LabelConfig(Frozen):
    """A label job: face shards in, the same shards plus one column per teacher out."""

    shards: list[str] = Field(min_length=1)
    out: str
    teachers: list[TeacherSpec] = Field(min_length=1)
    workers: int = Field(2, ge=1, description="teacher actors")
    worker_cpus: float = Field(1.0, gt=0)
    use_gpu: bool = Field(False, description="one GPU per teacher actor")
    batch_size: int = Field(256, ge=1, description="rows aligned and scored at once")

    @field_validator("teachers")
    @classmethod
    def _distinct_columns(cls, teachers: list[TeacherSpec]) -> list[TeacherSpec]:
        columns = [t.column for t in teachers]
        if len(set(columns)) != len(columns):
            raise ValueError(f"two teachers write the same column: {columns}; set 'label' to tell them apart")
        return teachers
