"""The fr-train job's spec."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator

from aikd.config.common import DataConfig, ModelName, RegisterConfig
from aikd.config.jobspec import EmbeddedDefault, JobSpec


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
    max_failures: int = Field(2, ge=0, description="worker failures survived (training resumes from its checkpoint)")
    checkpoint_every: int = Field(100, ge=1, description="optimizer steps between checkpoints (a rerun resumes from "
                                  "the latest)")
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
