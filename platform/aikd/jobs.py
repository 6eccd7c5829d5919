"""The job kinds, by name: each kind's module is loaded when it is asked for (``aikd --help`` stays fast).

Each kind's package has a ``run.py`` whose :data:`JOB` says what the kind is: its spec
model and its runner (which goes through :func:`aikd.job.run_job`); its help line is here.
Like the model and teacher registries, this one imports its entries lazily, from a
fixed table in code: no module is ever imported by a name a spec gives.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aikd.config import JobSpec
from aikd.errors import ConfigError


@dataclass(frozen=True)
class JobKind:
    kind: str
    spec: type[JobSpec]
    run: Callable[..., dict]  # run(cfg) -> the job's summary


def _ingest() -> JobKind:
    from aikd.ingest.run import JOB

    return JOB


def _fr_train() -> JobKind:
    from aikd.frtrain.run import JOB

    return JOB


def _label() -> JobKind:
    from aikd.label.run import JOB

    return JOB


def _distill() -> JobKind:
    from aikd.distill.run import JOB

    return JOB


def _evaluate() -> JobKind:
    from aikd.evaluate.run import JOB

    return JOB


def _score() -> JobKind:
    from aikd.score.run import JOB

    return JOB


def _sweep() -> JobKind:
    from aikd.sweep.run import JOB

    return JOB


def _experiment() -> JobKind:
    from aikd.experiment.run import JOB

    return JOB


# kind -> the loader of its JOB
KINDS = {"ingest": _ingest, "fr-train": _fr_train, "label": _label, "distill": _distill, "evaluate": _evaluate,
         "score": _score, "sweep": _sweep, "experiment": _experiment}
# kind -> one line of help, here so that `aikd --help` imports no job module
HELP = {"ingest": "images (a landmarks table, or faces found by a detector) -> face shards (Ray Data)",
        "fr-train": "train a small FR backbone + margin head (Ray Train)",
        "label": "write teacher FIQA quality columns onto face shards",
        "distill": "AI-KD distillation on Ray Train + DeepSpeed",
        "evaluate": "EDC / pAUC report: FIQA models x alignment conditions",
        "score": "score a face gallery with students (batch, resumable per file)",
        "sweep": "search distillation settings with Ray Tune + Optuna, register the best",
        "experiment": "teachers x ablations x seeds, one paired evaluation (experiments/)"}


def job_kind(kind: str) -> JobKind:
    if kind not in KINDS:
        raise ConfigError(f"unknown job kind {kind!r}; valid: {', '.join(KINDS)}")
    return KINDS[kind]()


def run_config(cfg: JobSpec) -> dict:
    """Run a validated spec of any kind (the embedded default's bootstrap runs its stages so)."""
    return job_kind(cfg.kind).run(cfg)
