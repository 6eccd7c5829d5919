"""The score job's spec."""

from __future__ import annotations

import math
from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from aikd.config.common import DetectorSpec, Resources, cpu_only
from aikd.config.jobspec import JobSpec
from aikd.spec import Frozen, PlainName, distinct


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
                                  "(+ 4 box numbers), as the ingest job reads it")
    images_per_file: int = Field(10_000, ge=1, description="images of a folder per output file (resume unit)")
    alignment: Literal["landmarks", "box", "aligned", "detect"] = Field(
        "landmarks", description="5-point similarity alignment, the detector box squared and resized, "
        "pre-aligned crops resized to the model's input, or detect: find the faces of each photo (a row per face)")
    detector: DetectorSpec = Field(DetectorSpec(), description="the face detector of alignment: detect")
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
    progress_every_s: float = Field(10.0, gt=0, description="most seconds between progress lines in a log")

    @model_validator(mode="after")
    def _one_input(self) -> ScoreConfig:
        if bool(self.shards) == (self.images is not None):
            raise ValueError("give exactly one input: shards (face shards) or images (a folder of images)")
        if self.landmarks is not None and self.images is None:
            raise ValueError("landmarks is the table of an images folder: shards carry their own")
        if self.images is not None and self.landmarks is None and self.alignment not in ("aligned", "detect"):
            raise ValueError(f"alignment {self.alignment!r} needs landmarks or boxes: give landmarks (a table for "
                             f"the images), set alignment: detect (raw photos) or aligned (aligned crops)")
        if self.alignment == "detect" and self.landmarks is not None:
            raise ValueError("alignment detect finds the landmarks itself: leave out the landmarks table")
        distinct([m.name for m in self.models], "model names", "they label the scores")
        return self

    @field_validator("decode")
    @classmethod
    def _decoding_runs_on_cpus(cls, value: Resources) -> Resources:
        return cpu_only(value, "decode")

    @property
    def scorer_threads(self) -> int:
        return self.model_threads or max(1, math.ceil(self.resources.cpus_per_worker))
