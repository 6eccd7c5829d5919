"""Typed, frozen job configuration, one model per concern, loaded from YAML.

Unknown keys are rejected and every error names the field, so a typo in a job spec is
a one-line message instead of a silently new key.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DataConfig(Frozen):
    """Where the faces are and how the training pipeline prepares them."""

    shards: list[str] = Field(min_length=1, description="URIs of face shard prefixes or files")
    label: str | None = Field(None, description="quality label column (e.g. q_serfiq); None for none")
    image_size: int = Field(112, ge=16, le=512, description="aligned output side; template scaled to it")
    misalignment: float = Field(3.0, ge=0.0, description="uniform landmark noise bound (AI-KD: 3 px)")
    misalignment_relative: bool = Field(False, description="misalignment as a fraction of inter-ocular distance")
    val_fraction: float = Field(0.01, ge=0.0, lt=1.0, description="share of image_ids held out for validation")
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
