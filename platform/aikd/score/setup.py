"""What each job asks of the scoring actors: its models and how to run them, read from its spec.

Scoring runs students (resolved registered versions or model dirs), on ONNX Runtime on
CPU actors by default; evaluation runs its FIQA models (students or teachers by name)
and the FR model whose embeddings score its comparisons, always in torch (its numbers
are torch's). A spec's views are :func:`aikd.score.views.views_of`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aikd.config import EvaluateConfig, ScoreConfig


@dataclass(frozen=True)
class ModelSource:
    """One quality model: a student's files (``uri``: what messages call it) or a teacher by name."""

    name: str
    student: str | None = None
    uri: str | None = None
    teacher: str | None = None
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Settings:
    backend: str  # auto (ONNX Runtime on CPUs, torch on GPUs), torch or onnx
    threads: int | None  # a CPU actor's torch / ONNX Runtime threads; None: as Ray set them
    batch_size: int  # faces per model call
    fr_model: str | None = None  # evaluation: the FR model whose embeddings the Scorer adds


def settings_of(cfg: ScoreConfig | EvaluateConfig) -> Settings:
    if isinstance(cfg, EvaluateConfig):
        return Settings("torch", None, cfg.batch_size, cfg.fr_model)
    return Settings(cfg.backend, cfg.scorer_threads, cfg.batch_size)


def model_sources(cfg: ScoreConfig | EvaluateConfig, models: list[dict] | None = None) -> list[ModelSource]:
    """An evaluation's FIQA models, or a scoring job's ``models`` (name, files, uri: as its driver resolved them)."""
    if isinstance(cfg, EvaluateConfig):
        return [ModelSource(m.name, m.student, m.student, m.teacher, dict(m.options)) for m in cfg.models]
    if models is None:
        raise ValueError("a scoring job's Scorer takes the models its driver resolved")
    return [ModelSource(m["name"], m["files"], m["uri"]) for m in models]


def backend_for(cfg: ScoreConfig | EvaluateConfig, device) -> str:
    """The backend a Scorer on ``device`` (a torch device) runs: the spec's; for auto, torch on a GPU, else ONNX."""
    backend = settings_of(cfg).backend
    if backend != "auto":
        return backend
    return "torch" if device.type == "cuda" else "onnx"
