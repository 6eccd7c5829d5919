"""The one shell every job kind runs through (docs/jobs.md).

A job module keeps only its own work; :func:`run_job` does the rest, in this order:

1. bootstrap the embedded default's inputs when the spec says ``bootstrap:``;
2. keep the rerun contract's skip: a job that skips finished work and whose summary
   exists returns that summary;
3. take the output's lock where the job writes a shared output (:mod:`aikd.lock`);
4. join or start Ray;
5. pin ``models:/`` URIs to the versions they name now (:func:`aikd.registry.resolve_models`);
6. open the tracked MLflow run (continued under the output by resumable jobs);
7. run the work, which returns its :class:`Outcome`;
8. write the summary (:data:`SUMMARY_FILE`, the same keys for every job);
9. log the outcome's metrics and output files to the run;
10. close the run FINISHED, or FAILED / KILLED when the work raised.

A user error (:class:`aikd.errors.AikdError`) stays one line in the CLI and a bug keeps
its traceback: the shell catches nothing but to close the run with its status.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from aikd.config import JobSpec
from aikd.console import say
from aikd.data.shards import SUMMARY_FILE  # side files of an output start with '_': a shard listing skips them
from aikd.defaults import ensure_default_inputs
from aikd.lock import output_lock
from aikd.redact import redact
from aikd.runtime import ensure_ray
from aikd.storage import Location

# every job's summary has these keys; a job's own fields sit beside them
SUMMARY_KEYS = ("job", "spec", "inputs", "outputs", "models", "counts", "rejects", "seconds", "mlflow_run")


@dataclass
class Outcome:
    """What a job's work hands the shell: its counts, rejects and own fields, what to track."""

    counts: dict[str, int | float]
    rejects: dict[str, int] = field(default_factory=dict)  # reason -> rows
    fields: dict = field(default_factory=dict)  # the job's own summary fields
    metrics: dict = field(default_factory=dict)  # logged to the tracked run (nested mappings: dotted names)
    files: list[str] = field(default_factory=list)  # output files (under the job's output) logged as artifacts
    artifact_path: str | None = None


@dataclass(frozen=True)
class Shape:
    """How the shell runs one job: where it writes, what it reads, its rerun contract."""

    out: Location  # the job's output: summary, lock and run state live here
    name: str  # the tracked run's name
    inputs: dict  # lineage: name -> URI(s)
    outputs: dict  # lineage: name -> URI
    rerun: Literal["resume", "recompute"]  # resume: the tracked run is continued under ``out`` by a rerun
    skip_finished: bool = False  # a rerun of a finished job (its summary written) returns that summary
    lock: bool = False  # one writer at a time: the job writes files of a shared output
    dashboard: bool = False  # a local Ray instance runs its dashboard (Tune's early stopping needs it)
    tags: dict | None = None  # added to the run's tags (a sweep's trial names its parent run)


@dataclass
class Job:
    """What the work of a job sees: its spec with models pinned, its output and tracked run."""

    cfg: JobSpec
    out: Location
    tracker: object | None  # aikd.tracking.Tracker, or None when tracking is off
    models: list[dict]  # the models:/ URIs pinned, as resolve_models reports them

    def log(self, text: str) -> None:
        say(f"{self.cfg.kind}: {text}")


def summary_path(out: Location) -> Location:
    return out.join(SUMMARY_FILE)


def finished(out: Location) -> dict | None:
    """The summary of a job that finished on ``out``, or None."""
    path = summary_path(out)
    return path.read_json() if path.exists() else None


def digest(parts) -> str:
    """A short hash of what a unit of output (a score file, an ingest partition) was made from: a rerun does the
    unit again when it changed."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def count_reasons(rejects: list[tuple[str, str]]) -> dict[str, int]:
    """Rejected rows per reason (the text before any ' (' detail), for the summary."""
    counts: dict[str, int] = {}
    for _, why in rejects:
        key = str(why).split(" (")[0]
        counts[key] = counts.get(key, 0) + 1
    return counts


def run_job(cfg: JobSpec, shape: Shape, work: Callable[[Job], Outcome]) -> dict:
    """Run one job through the shell; its summary (also written under ``shape.out``).

    Ray is joined or started only for work that needs it: to build the embedded default,
    and once the output's lock is held (a job refused by the lock, or skipped because
    it finished, starts none).
    """
    start = time.perf_counter()
    if getattr(cfg, "bootstrap", None) is not None:
        from aikd.jobs import run_config  # the job kinds load lazily: each of them runs through this shell

        ensure_ray(dashboard=shape.dashboard)
        ensure_default_inputs(cfg.bootstrap, upto=cfg.kind, run=run_config)
    if shape.skip_finished and (done := finished(shape.out)) is not None:
        print(f"{cfg.kind}: {shape.out.uri} has finished; its summary stands", flush=True)
        return done | {"skipped": True}
    with output_lock(shape.out, cfg.kind) if shape.lock else contextlib.nullcontext():
        ensure_ray(dashboard=shape.dashboard)
        return _tracked(cfg, shape, work, start)


def _tracked(cfg: JobSpec, shape: Shape, work: Callable[[Job], Outcome], start: float) -> dict:
    from aikd.registry import resolve_models
    from aikd.tracking import job_run

    asked = cfg
    cfg, models = resolve_models(cfg, shape.out)
    resume = shape.out if shape.rerun == "resume" else None
    with job_run(cfg, shape.name, shape.inputs, shape.outputs, resume_under=resume, tags=shape.tags) as tracker:
        say(f"{cfg.kind}: started, writing {redact(shape.out.uri)}")
        outcome = work(Job(cfg, shape.out, tracker, models))
        summary = _summary(asked, shape, models, outcome, tracker, time.perf_counter() - start)
        summary_path(shape.out).write_json(summary)
        say(result_line(summary, summary_path(shape.out).uri))
        if tracker is not None:
            tracker.log_metrics(outcome.metrics | {"seconds": summary["seconds"]} | {"counts": outcome.counts})
            tracker.log_outputs(shape.out, [SUMMARY_FILE, *outcome.files], outcome.artifact_path)
    return summary


REASONS_SHOWN = 3  # the result line names the commonest reject reasons; the summary holds them all


def result_line(summary: dict, where: str) -> str:
    """A job's last line: how long, its counts and rejects by reason, where its summary is."""
    counts = ", ".join(f"{k} {v}" for k, v in summary["counts"].items() if not isinstance(v, dict | list))
    common = sorted(summary["rejects"].items(), key=lambda item: -item[1])
    rejects = "; rejected: " + ", ".join(f"{why} {n}" for why, n in common[:REASONS_SHOWN]) if common else ""
    if len(common) > REASONS_SHOWN:
        rejects += f" and {len(common) - REASONS_SHOWN} more reasons (in the summary)"
    return f"{summary['job']}: done in {summary['seconds']:.0f} s ({counts}){rejects}; summary: {redact(where)}"


def _summary(cfg: JobSpec, shape: Shape, models: list[dict], outcome: Outcome, tracker, seconds: float) -> dict:
    clash = sorted(set(outcome.fields) & set(SUMMARY_KEYS))
    if clash:
        raise ValueError(f"{cfg.kind}: job fields {clash} would overwrite the summary's own keys")
    common = {"job": cfg.kind, "spec": redact(cfg.model_dump(mode="json")), "inputs": redact(shape.inputs),
              "outputs": redact(shape.outputs), "models": redact(models),
              "counts": outcome.counts, "rejects": outcome.rejects, "seconds": round(seconds, 1),
              "mlflow_run": tracker.run_id if tracker is not None else None}
    return common | outcome.fields
