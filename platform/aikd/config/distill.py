"""The distill job's spec: data, student, objective, optimisation, validation, engine."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from aikd.config.common import RESOURCE_RENAMES, DataConfig, ModelName, RegisterConfig
from aikd.config.jobspec import EmbeddedDefault, JobSpec
from aikd.distill.metrics import DIRECTION, QUALITY_LOSS, needs_pauc, selectable
from aikd.spec import Frozen, PlainName


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


class ValidationConfig(Frozen):
    """What AI-KD is for, measured at every validation: EDC pAUC of the student's quality (docs/method.md)."""

    pauc: bool = Field(True, description="EDC pAUC on the aligned and misaligned validation views, with "
                       "comparison scores from the frozen FR backbone's embeddings of the same crops")
    fmr: float = Field(1e-3, gt=0, lt=1)
    discard: float = Field(0.3, gt=0, le=1, description="pAUC limit: share of mated comparisons discarded")
    min_mated_pairs: int = Field(50, ge=1, description="fewer mated pairs in validation: no pAUC (a note says "
                                 "so), or an error when `select` needs the pAUC")
    non_mated: int = Field(200_000, ge=1, description="non-mated validation pairs sampled")
    select: str = Field(QUALITY_LOSS, description="the validation metric whose best value makes the run's "
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
        return needs_pauc(self.select)

    def better(self, value: float, best: float | None) -> bool:
        """Whether ``value`` of the selection metric beats ``best`` (None: nothing yet)."""
        if best is None:
            return True
        return value < best if DIRECTION[self.select] == "min" else value > best


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
