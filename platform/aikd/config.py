"""Typed, frozen job configuration, one model per concern, loaded from YAML.

Unknown keys are rejected and every error names the field, so a typo in a job spec is
a one-line message instead of a silently new key. Every job's spec shares one shape
(docs/jobs.md): a ``resources`` section, outputs under one URI, and optionally a
``bootstrap`` section that runs it on the embedded default.
"""

from __future__ import annotations

import difflib
import math
import re
import types
import typing
import warnings
from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from aikd.errors import ComponentError, ConfigError

# A spec's `register:` field has the name of ABCMeta.register, which pydantic's models
# inherit and aikd never calls: pydantic's warning about the shadowing says nothing useful.
warnings.filterwarnings("ignore", message='Field name "register"', category=UserWarning)


def load_spec(uri: str, model: type[BaseModel], overrides: dict | None = None) -> BaseModel:
    """Read a YAML job spec from any URI and validate it; errors name the field and the file."""
    data, source = read_spec(uri)
    data.pop("job", None)  # the job kind, read by `aikd run`
    return validate(model, with_overrides(data, overrides or {}), source=source)


def read_spec(uri: str) -> tuple[dict, str]:
    """A spec file's mapping of fields and its URI; plain YAML data only (``safe_load``: no Python tags)."""
    import yaml

    from aikd.storage import resolve

    location = resolve(uri)
    if not location.exists():
        raise ConfigError(f"job spec not found: {location.uri}")
    try:
        data = yaml.safe_load(location.read_bytes().decode("utf-8")) or {}
    except UnicodeDecodeError:
        raise ConfigError(f"{location.uri}: not a YAML job spec (not UTF-8 text)") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{location.uri}: not valid YAML: {yaml_problem(err)}") from None
    except OSError as err:  # a folder, an unreadable file
        raise ConfigError(f"{location.uri}: cannot read the job spec ({type(err).__name__}: {err})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{location.uri}: a job spec is a mapping of fields, got {type(data).__name__}")
    return data, location.uri


def yaml_problem(err: Exception) -> str:
    """A YAML error in one line: what and where (PyYAML's own text spans lines, with a caret)."""
    problem = getattr(err, "problem", None) or str(err).strip().splitlines()[0]
    mark = getattr(err, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    if "python/" in problem:  # !!python/object/apply:os.system and kin: safe_load builds no objects
        problem += ": a spec is plain data, YAML tags that build Python objects are refused"
    return problem + where


def with_overrides(data: dict, overrides: dict) -> dict:
    """A copy of ``data`` with each ``dotted.key: value`` of ``overrides`` set (sections made as needed)."""
    import copy

    out = copy.deepcopy(data)
    for dotted, value in overrides.items():
        node = out
        *parents, leaf = dotted.split(".")
        for key in parents:
            if not isinstance(node.get(key, {}), dict):
                raise ConfigError(f"cannot set {dotted}: {key} is a value, not a section")
            node = node.setdefault(key, {})
        node[leaf] = value
    return out


def validate(model: type[BaseModel], data: dict, source: str = "spec") -> BaseModel:
    """``model.model_validate`` whose failure is one :class:`ConfigError` line naming every bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(f"{source}: invalid {model.__name__}: " + error_text(model, err)) from None


def error_text(model: type[BaseModel], err: ValidationError, prefix: str = "") -> str:
    """Pydantic's errors as ``dotted.field: message`` parts of one line.

    A union's member tags (``base.str``, ``base.dict[any,any]``) are left out of the
    path and its messages joined; an unknown field says which field was meant, or
    lists the fields there.
    """
    by_field: dict[str, list[str]] = {}
    for e in err.errors():
        where, container = _field_path(model, e["loc"])
        message = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden" and container is not None:
            message += _field_hint(str(e["loc"][-1]), container)
        by_field.setdefault(".".join(p for p in (prefix, where) if p), []).append(message)
    parts = []
    for where, messages in by_field.items():
        messages = list(dict.fromkeys(messages))
        if len(messages) > 1 and all(m.startswith("Input should be ") for m in messages):
            messages = [" or ".join([messages[0]] + [m.removeprefix("Input should be ") for m in messages[1:]])]
        message = "; ".join(messages)
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def _models_in(annotation) -> list[type[BaseModel]]:
    """The pydantic models an annotation holds (alone, or inside Optional, a union, a list or a dict)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _is_union(annotation) -> bool:
    members = [a for a in typing.get_args(annotation) if a is not type(None)]
    return typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(members) > 1


def _field_path(model: type[BaseModel], loc: tuple) -> tuple[str, type[BaseModel] | None]:
    """The dotted path of an error's location, and the model that holds its last part (None: not a model)."""
    parts: list[str] = []
    current: type[BaseModel] | None = model
    holder: type[BaseModel] | None = model
    union = False
    for part in loc:
        holder = current
        fields = current.model_fields if current is not None else {}
        if isinstance(part, str) and part in fields:
            annotation = fields[part].annotation
            found = _models_in(annotation)
            current, union = (found[0] if len(found) == 1 else None), _is_union(annotation)
            parts.append(part)
        elif union and isinstance(part, str):  # a union member's tag, e.g. 'str' or 'dict[any,any]'
            union = False
        else:  # a list index or a mapping key: the model of the items stays current
            parts.append(str(part))
    return ".".join(parts), holder


def _field_hint(name: str, model: type[BaseModel]) -> str:
    fields = sorted(model.model_fields)
    close = difflib.get_close_matches(name, fields, n=1)
    return f"; did you mean {close[0]!r}?" if close else f"; valid fields: {', '.join(fields)}"


def deep_merge(base: dict, top: dict) -> dict:
    """``top`` over ``base``, recursively for mappings (lists and values of ``top`` replace)."""
    out = dict(base)
    for key, value in top.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def distinct(values: list[str], what: str, why: str) -> None:
    """Refuse repeated values in a list where each must name one thing."""
    if len(set(values)) != len(values):
        raise ValueError(f"{what} must be distinct ({why}), got {values}")


PLAIN_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")
PLAIN_NAME_FORM = "a plain name (letters, digits, . _ -, not starting with '.')"


def plain_name(value: str) -> str:
    """A name that becomes a directory, file or column name: no '/', no '..', nothing hidden."""
    if not PLAIN_NAME.fullmatch(value):
        raise ValueError(f"must be {PLAIN_NAME_FORM}, got {value!r}")
    return value


PlainName = Annotated[str, AfterValidator(plain_name)]


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


ModelName = Annotated[str, AfterValidator(registered_model)]
TeacherName = Annotated[str, AfterValidator(registered_teacher)]


class Frozen(BaseModel):
    """Immutable, unknown keys refused; fields a spec may still carry under an old name say their new one."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    renamed: ClassVar[dict[str, str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _old_spellings(cls, data):
        if isinstance(data, dict):
            for old, new in cls.renamed.items():
                if old in data:
                    raise ValueError(f"field {old!r} was renamed: set {new}")
        return data


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


class FRTrainConfig(JobSpec):
    """Face recognition pretraining: a backbone plus a margin head on aligned shards."""

    kind: ClassVar[str] = "fr-train"

    data: DataConfig
    out: str = Field(description="URI of the model directory to write (safetensors + card)")
    model: ModelName = "iresnet_tiny"
    model_args: dict = Field(default_factory=dict, description="create_model overrides, e.g. width")
    head: Literal["cosface", "arcface"] = "cosface"
    head_scale: float = Field(32.0, gt=0)
    head_margin: float | None = Field(None, description="None: the head's own default (0.35 / 0.5)")
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(64, ge=2, description="per worker")
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    max_failures: int = Field(2, ge=0, description="worker failures survived (training restarts from its start)")
    log_every: int = Field(20, ge=1, description="steps between progress lines")
    seed: int = 0
    register: RegisterConfig | None = Field(None, description="register the trained backbone in MLflow")
    bootstrap: EmbeddedDefault | None = Field(None, description="train the embedded default's FR model")

    @field_validator("data")
    @classmethod
    def _held_out_identities(cls, data: DataConfig) -> DataConfig:
        if data.split_by != "subject_id":
            raise ValueError("FR training holds out whole identities: set data.split_by: subject_id")
        return data


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


class StudentConfig(Frozen):
    """The student's backbone: a model directory with a card, or a user's weights file."""

    weights: str = Field(description="model dir (card.json + safetensors), a registered model (models:/name/version, "
                         "models:/name@alias) or a .pth/.safetensors backbone")
    backbone: ModelName | None = Field(None, description="registry name; needed only for a bare weights file")
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
    """The reference optimisation (docs/method.md), every knob named."""

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


# validation metrics a run (and a sweep) can select by, with their direction
SELECTABLE = {"val_quality_loss": "min", "val_quality_loss_misaligned": "min", "val_pauc_aligned": "min",
              "val_pauc_misaligned": "min", "val_spearman": "max", "val_spearman_misaligned": "max"}


def selectable(value: str, field: str) -> str:
    """``value`` if it is a validation metric a run can select by (``field`` names it in the error)."""
    if value not in SELECTABLE:
        raise ValueError(f"{field} must be one of {sorted(SELECTABLE)}, got {value!r}")
    return value


class ValidationConfig(Frozen):
    """What AI-KD is for, measured at every validation: EDC pAUC of the student's quality (docs/method.md)."""

    pauc: bool = Field(True, description="EDC pAUC on the aligned and misaligned validation views, with "
                       "comparison scores from the frozen FR backbone's embeddings of the same crops")
    fmr: float = Field(1e-3, gt=0, lt=1)
    discard: float = Field(0.3, gt=0, le=1, description="pAUC limit: share of mated comparisons discarded")
    min_mated_pairs: int = Field(50, ge=1, description="fewer mated pairs in validation: no pAUC (a note says "
                                 "so), or an error when `select` needs the pAUC")
    non_mated: int = Field(200_000, ge=1, description="non-mated validation pairs sampled")
    select: str = Field("val_quality_loss", description="the validation metric whose best value makes the run's "
                        "best/ student (a sweep sets its own metric here)")

    @field_validator("select")
    @classmethod
    def _selectable(cls, value: str) -> str:
        return selectable(value, "select")

    @model_validator(mode="after")
    def _selection_is_measured(self) -> ValidationConfig:
        if self.needs_pauc and not self.pauc:
            raise ValueError(f"select {self.select} needs the validation pAUC: set pauc: true")
        return self

    @property
    def needs_pauc(self) -> bool:
        return self.select.startswith("val_pauc")

    def better(self, value: float, best: float | None) -> bool:
        """Whether ``value`` of the selection metric beats ``best`` (None: nothing yet)."""
        if best is None:
            return True
        return value < best if SELECTABLE[self.select] == "min" else value > best


class EngineConfig(Frozen):
    """How one optimizer step is computed, whichever strategy runs it."""

    micro_batch: int = Field(64, ge=1, description="samples per worker per forward/backward")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    zero_stage: Literal[0, 1, 2] = Field(0, description="DeepSpeed ZeRO stage (the deepspeed strategy only)")


class DistillConfig(JobSpec):
    """An AI-KD distillation run. ``storage``/``name`` identify it: the same pair resumes."""

    kind: ClassVar[str] = "distill"
    renamed: ClassVar[dict[str, str]] = RESOURCE_RENAMES | {"deepspeed": "engine"}

    name: PlainName = Field(description="the run: <storage>/<name>/")
    storage: str = Field(description="URI under which runs live (disk or s3://)")
    data: DataConfig
    student: StudentConfig
    objective: ObjectiveConfig = ObjectiveConfig()
    optim: OptimConfig = OptimConfig()
    engine: EngineConfig = EngineConfig()
    validation: ValidationConfig = ValidationConfig()
    strategy: Literal["deepspeed", "ddp"] = "deepspeed"
    epochs: int = Field(1, ge=1)
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps (budgets, tests)")
    max_failures: int = Field(2, ge=0, description="worker failures survived by restarting from the checkpoint")
    keep_checkpoints: int = Field(2, ge=1, description="checkpoints kept (the newest); the best student is in best/")
    val_limit: int = Field(2048, ge=1, description="validation rows kept in memory on rank 0")
    log_every: int = Field(10, ge=1, description="optimizer steps between progress lines")
    data_buffer_mb: int = Field(
        256, ge=16, description="object store budget of the training stream: the decode/warp actors stay this "
        "far ahead of training instead of racing through every epoch (and stealing its CPUs)")
    register: RegisterConfig | None = Field(None, description="register the best student in MLflow when the run ends")
    bootstrap: EmbeddedDefault | None = Field(None, description="build the embedded default's inputs first")

    @field_validator("data")
    @classmethod
    def _needs_label(cls, data: DataConfig) -> DataConfig:
        if data.label is None:
            raise ValueError("distillation needs a teacher label column: set data.label (e.g. q_serfiq)")
        return data

    @model_validator(mode="after")
    def _zero_needs_deepspeed(self) -> DistillConfig:
        if self.strategy != "deepspeed" and self.engine.zero_stage != 0:
            raise ValueError(f"engine.zero_stage {self.engine.zero_stage} needs strategy: deepspeed "
                             f"(the {self.strategy} strategy keeps whole optimizer state on every worker)")
        return self


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

    kind: Literal["aligned", "misaligned", "box"]
    strength: float | None = None
    index: int = 0

    def __post_init__(self):
        if (self.kind == "misaligned") != (self.strength is not None):
            raise ValueError(f"a misaligned condition, and only it, has a strength: got {self!r}")

    @property
    def name(self) -> str:
        """Display name and column / file key: ``aligned``, ``misaligned_<strength:g>``, ``box``."""
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
        return out + ([Condition("box")] if self.box else [])

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


class ScoreModel(Frozen):
    """One FIQA model of a scoring job: a student model dir or a registered version."""

    name: PlainName = Field(description="column value in the output (model)")
    model: str = Field(description="a student model dir (a run's best/) or models:/name/version, models:/name@alias")


class ScoreConfig(JobSpec):
    """Batch scoring of a gallery: faces in, one quality per face and model out, resumable per shard."""

    kind: ClassVar[str] = "score"

    shards: list[str] = Field(default_factory=list, description="face shard prefixes or files (any URI)")
    images: str | None = Field(None, description="a folder/prefix of image files, instead of shards")
    landmarks: str | None = Field(None, description="CSV/JSON table for `images`: path -> 10 landmark numbers "
                                  "(+ 4 box numbers), as `aikd ingest folder` reads it")
    images_per_file: int = Field(10_000, ge=1, description="images of a folder per output file (resume unit)")
    alignment: Literal["landmarks", "box", "aligned"] = Field(
        "landmarks", description="5-point similarity alignment, the detector box squared and resized, or "
        "pre-aligned crops resized to the model's input")
    box_margin: float = Field(0.0, ge=0)
    models: list[ScoreModel] = Field(min_length=1)
    out: str = Field(description="URI prefix of the score files, one per input shard")
    batch_size: int = Field(256, ge=1, description="faces per model call")
    backend: Literal["auto", "torch", "onnx"] = Field(
        "auto", description="auto: ONNX Runtime on CPU actors (faster there, bench/score.py), torch on GPUs")
    # one machine of 2 CPUs by default: a model actor of 1.5 CPUs (2 threads) and a decode actor of 0.5,
    # which keeps up (bench/score.py); a GPU cluster sets resources.gpus_per_worker and more decode workers
    resources: Resources = Resources(workers=1, cpus_per_worker=1.5)
    decode: Resources = Field(Resources(workers=1, cpus_per_worker=0.5),
                              description="decode/align actors (CPU); `resources` are the model actors")
    model_threads: int | None = Field(None, ge=1, description="threads of a model actor on a CPU; default: its "
                                      "cpus_per_worker rounded up (the decode actors leave their share mostly idle)")
    progress_every_s: float = Field(10.0, gt=0, description="seconds between progress lines")

    @model_validator(mode="after")
    def _one_input(self) -> ScoreConfig:
        if bool(self.shards) == (self.images is not None):
            raise ValueError("give exactly one input: shards (face shards) or images (a folder of images)")
        if self.landmarks is not None and self.images is None:
            raise ValueError("landmarks is the table of an images folder: shards carry their own")
        if self.images is not None and self.landmarks is None and self.alignment != "aligned":
            raise ValueError(f"alignment {self.alignment!r} needs landmarks or boxes: give landmarks (a table for "
                             f"the images) or set alignment: aligned (the images are aligned crops)")
        distinct([m.name for m in self.models], "model names", "they label the scores")
        return self

    @field_validator("decode")
    @classmethod
    def _decoding_runs_on_cpus(cls, value: Resources) -> Resources:
        return cpu_only(value, "decode")

    @property
    def scorer_threads(self) -> int:
        return self.model_threads or max(1, math.ceil(self.resources.cpus_per_worker))


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
    metric: str = Field("val_pauc_misaligned", description="validation metric the trials are ranked by")
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
        if self.mode is not None and self.mode != SELECTABLE[self.metric]:
            raise ValueError(f"{self.metric} is better when {'lower' if SELECTABLE[self.metric] == 'min' else 'higher'}"
                             f": mode must be {SELECTABLE[self.metric]}")
        if self.resources.workers != 1 or self.resources.use_gpu:
            raise ValueError("resources is one trial's driver: workers 1 and no GPU (set concurrency for parallel "
                             "trials, and the base's resources for its workers)")
        return self

    @property
    def direction(self) -> Literal["min", "max"]:
        return SELECTABLE[self.metric]


class ExperimentSweep(Frozen):
    """A small sweep whose best setting becomes the experiment's variant ``sweep-best``."""

    teacher: TeacherName = Field("serfiq", description="the teacher the sweep searches with (its label is fixed)")
    trials: int = Field(4, ge=1)
    fixed: dict = Field(default_factory=dict, description="dotted fields every trial shares, e.g. epochs: 1")
    metric: str = "val_pauc_misaligned"
    mode: Literal["min", "max"] = "min"

    @model_validator(mode="after")
    def _selectable(self) -> ExperimentSweep:  # checked here, not when the sweep starts after the distill runs
        selectable(self.metric, "metric")
        if self.mode != SELECTABLE[self.metric]:
            raise ValueError(f"{self.metric} is better when {'lower' if SELECTABLE[self.metric] == 'min' else 'higher'}"
                             f": mode must be {SELECTABLE[self.metric]}")
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
