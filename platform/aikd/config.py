"""Typed, frozen job configuration, one model per concern, loaded from YAML.

Unknown keys are rejected and every error names the field, so a typo in a job spec is
a one-line message instead of a silently new key.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


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
    val_misaligned: bool = Field(False, description="validation rows also get a misaligned twin (fixed noise)")
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


class BootstrapConfig(Frozen):
    """The embedded default's inputs, made where missing: synthetic faces, an FR model, teacher labels.

    No data set or pretrained model can be downloaded on the default machine, so a job
    spec may ask for them to be built first (idempotent: what exists is kept).
    """

    root: str = Field("runs/default", description="URI under which faces/, fr_model/ and labelled/ live")
    identities: int = Field(200, ge=4)
    samples_per_identity: int = Field(10, ge=2)
    seed: int = 0
    image_size: int = Field(64, ge=16)
    fr_epochs: int = Field(8, ge=1)
    teachers: list[str] = Field(default_factory=lambda: ["serfiq", "crfiqa", "norm"])
    serfiq_passes: int = Field(50, ge=2)
    workers: int = Field(2, ge=1)
    cpus_per_worker: float = Field(0.5, gt=0)


class StudentConfig(Frozen):
    """The student's backbone: a model directory with a card, or a user's weights file."""

    weights: str = Field(description="model dir (card.json + safetensors) or a .pth/.safetensors backbone")
    backbone: str | None = Field(None, description="registry name; needed only for a bare weights file")
    backbone_args: dict = Field(default_factory=dict)


class ObjectiveConfig(Frozen):
    consistency_weight: float = Field(1.0, ge=0)
    quality_weight: float = Field(1.0, ge=0)
    smooth_l1_beta: float = Field(0.5, gt=0)
    consistency_target: Literal["frozen", "shared"] = Field(
        "frozen", description="frozen copy of the initial backbone, or the student's own (reference code)")
    label_scaling: Literal["none", "standardize"] = Field(
        "standardize", description="regress (label - mean) / std of the training labels: teachers' scales differ "
        "by orders of magnitude (serfiq ~0.7 +- 0.02, norm ~20 +- 5); 'none' regresses raw labels as the reference")


class OptimConfig(Frozen):
    """The reference optimisation (AIKD.md), every knob named."""

    head_lr: float = Field(0.05, gt=0)
    head_momentum: float = Field(0.9, ge=0, lt=1)
    backbone_lr: float = Field(0.05, ge=0)
    backbone_momentum: float = Field(0.1, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    train_last_k: int = Field(100, ge=0, description="last K trainable backbone tensors; 0 freezes the backbone")
    grad_clip: float = Field(5.0, gt=0)
    warmup_fraction: float = Field(0.15, ge=0, le=1, description="sine warm-up length, share of an epoch")
    pretrain_fraction: float = Field(0.3, ge=0, le=1, description="no validation before this share of an epoch")
    val_every: float = Field(0.1, gt=0, le=1, description="validation interval, share of an epoch")
    ema_old_weight: float = Field(0.1, ge=0, lt=1, description="EMA: new = w * old + (1 - w) * current")


class DeepSpeedConfig(Frozen):
    zero_stage: Literal[0, 1, 2] = 0
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    micro_batch: int = Field(64, ge=1, description="per worker")
    grad_accum: int = Field(1, ge=1)


class DistillConfig(Frozen):
    """An AI-KD distillation run. ``storage``/``name`` identify it: the same pair resumes."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    storage: str = Field(description="URI under which runs live (disk or s3://)")
    data: DataConfig
    student: StudentConfig
    objective: ObjectiveConfig = ObjectiveConfig()
    optim: OptimConfig = OptimConfig()
    deepspeed: DeepSpeedConfig = DeepSpeedConfig()
    strategy: Literal["deepspeed", "ddp"] = "deepspeed"
    epochs: int = Field(1, ge=1)
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps (budgets, tests)")
    workers: int = Field(2, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0)
    max_failures: int = Field(2, ge=0, description="worker failures survived by restarting from the checkpoint")
    val_limit: int = Field(2048, ge=1, description="validation rows kept in memory on rank 0")
    log_every: int = Field(10, ge=1, description="optimizer steps between progress lines")
    data_buffer_mb: int = Field(
        256, ge=16, description="object store budget of the training stream: the decode/warp actors stay this "
        "far ahead of training instead of racing through every epoch (and stealing its CPUs)")
    bootstrap: BootstrapConfig | None = Field(None, description="build the embedded default's inputs first")

    @field_validator("data")
    @classmethod
    def _needs_label(cls, data: DataConfig) -> DataConfig:
        if data.label is None:
            raise ValueError("distillation needs a teacher label column: set data.label (e.g. q_serfiq)")
        return data


class FIQASpec(Frozen):
    """One FIQA model under evaluation: a teacher by name, or a distilled student's model dir."""

    name: str = Field(description="display name in tables and plots")
    teacher: str | None = Field(None, description="teacher registry name (scored on each condition's crops)")
    options: dict = Field(default_factory=dict, description="teacher options")
    student: str | None = Field(None, description="URI of a student model dir (distill output or registry)")

    @model_validator(mode="after")
    def _one_source(self) -> FIQASpec:
        if (self.teacher is None) == (self.student is None):
            raise ValueError(f"model {self.name!r}: give exactly one of 'teacher' or 'student'")
        return self


class EvaluateConfig(Frozen):
    """EDC / pAUC of FIQA models under alignment conditions, with an FR model scoring comparisons."""

    shards: list[str] = Field(min_length=1)
    out: str
    fr_model: str = Field(description="FR model dir whose embeddings score the comparisons")
    models: list[FIQASpec] = Field(min_length=1)
    misalignment: list[float] = Field(default_factory=lambda: [3.0], description="strengths, one condition each")
    misalignment_relative: bool = False
    box: bool = Field(True, description="also evaluate box-cropped faces (no landmarks)")
    box_margin: float = Field(0.0, ge=0)
    seed: int = 0
    fmr: list[float] = Field(default_factory=lambda: [1e-3])
    pauc_limits: list[float] = Field(default_factory=lambda: [0.2, 0.3])
    pair_quality: Literal["min", "mean"] = "min"
    mode: Literal["fixed", "reestimated"] = "fixed"
    max_mated: int = Field(100_000, ge=1)
    non_mated: int = Field(1_000_000, ge=1)
    pairs_file: str | None = Field(None, description="LFW pairs.txt or CSV; default: pairs built from subject ids")
    workers: int = Field(2, ge=1)
    worker_cpus: float = Field(1.0, gt=0)
    batch_size: int = Field(256, ge=1)

    @field_validator("models")
    @classmethod
    def _distinct_names(cls, models: list[FIQASpec]) -> list[FIQASpec]:
        names = [m.name for m in models]
        if len(set(names)) != len(names):
            raise ValueError(f"model names must be distinct, got {names}")
        return models
