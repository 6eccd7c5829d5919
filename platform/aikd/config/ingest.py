"""The ingest job's spec."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from aikd.config.common import DetectorSpec, Resources
from aikd.config.jobspec import JobSpec
from aikd.spec import PlainName

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class IngestConfig(JobSpec):
    """Images in a folder or object-store prefix -> face shards: faces located by a landmarks table (or the AI-KD
    reference pickles), or found by a face detector; distributed on Ray Data, resumable per partition."""

    kind: ClassVar[str] = "ingest"

    images: str = Field(description="a folder or URI prefix of image files, read recursively")
    suffixes: list[str] = Field(list(IMAGE_SUFFIXES), min_length=1, description="file name endings read as images")
    landmarks: str | None = Field(None, description="CSV/JSON table: path (relative to images) -> 10 landmark numbers "
                                  "(+ 4 box numbers), or the AI-KD reference landmarks pickle (.pkl); leave out "
                                  "to find the faces with the detector")
    quality: str | None = Field(None, description="the AI-KD reference quality pickle (name -> score) beside the "
                                "landmarks pickle: stored as the label column q_<label>")
    label: PlainName = Field("external", description="the teacher name of the quality pickle's column (q_<label>)")
    detector: DetectorSpec = Field(DetectorSpec(), description="the face detector, when no landmarks are given")
    margin: float = Field(0.5, ge=0.1, le=2.0, description="detection: a stored face is its box grown by this "
                          "share of the box's side on every side (context the misaligned twin warps in)")
    subject: Literal["folder", "table", "none"] = Field(
        "folder", description="subject_id: the first folder of each image's path, the landmarks table's subject "
        "column, or none")
    out: str = Field(description="URI prefix of the face shards (one per partition), rejects and summary")
    images_per_shard: int = Field(1000, ge=1, description="images per partition: one shard file each, the unit "
                                  "of work and of resume")
    # detection is the work: one CPU per actor by default (its torch threads), GPUs when given
    resources: Resources = Resources(workers=2, cpus_per_worker=1.0)
    progress_every_s: float = Field(30.0, gt=0, description="most seconds between progress lines in a log")

    @model_validator(mode="after")
    def _sources(self) -> IngestConfig:
        if self.subject == "table" and (self.landmarks is None or self.reference_pickles):
            raise ValueError("subject: table reads the landmarks table's subject column: give a CSV or JSON table "
                             "as landmarks")
        if self.quality is not None and not self.reference_pickles:
            raise ValueError("quality is the AI-KD reference quality pickle: it goes with the reference landmarks "
                             "pickle (landmarks: <file>.pkl)")
        return self

    @field_validator("suffixes")
    @classmethod
    def _dotted(cls, suffixes: list[str]) -> list[str]:
        return [s.lower() if s.startswith(".") else f".{s.lower()}" for s in suffixes]

    @property
    def reference_pickles(self) -> bool:
        return self.landmarks is not None and self.landmarks.lower().endswith((".pkl", ".pickle"))

    @property
    def detect(self) -> bool:
        return self.landmarks is None
