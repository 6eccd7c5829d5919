"""The label job (``aikd label``): face shards in, the same shards plus ``q_<teacher>`` out.

    shard URIs -> map_batches(Labeller, actor pool; GPU when asked)
        each shard: decode + properly align (no perturbation), every teacher scores the
        rows, the shard is written again under the output prefix with its new columns
    -> driver: per-teacher summary (count, mean, quantiles, unscored) and rejects table

Rerun contract: resume. Output shards map one-to-one to input shards and are written
whole, each followed by a sidecar under ``_progress/``; a job started again on the same
output labels only the shards without one, then summarises the whole output, in the
same MLflow run (its id is kept under the output). One job writes an output at a time
(:mod:`aikd.lock`): a second one refuses. Teachers' ``model`` options may be
registered FR models (``models:/name@alias``).
"""

from __future__ import annotations

import json
import posixpath
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow.parquet as pq

from aikd.actor_pool import map_actors
from aikd.config import LabelConfig
from aikd.data.shards import check_shard, read_rejects, shard_files, write_rejects
from aikd.job import Job, Outcome, Shape, count_reasons, run_job
from aikd.jobs import JobKind
from aikd.label.labeller import Labeller, sidecar
from aikd.progress import Progress
from aikd.storage import resolve
from aikd.teachers import create_teacher


def plan(cfg: LabelConfig) -> list[dict]:
    """(source shard, output shard) pairs; names stay, prefixed by input index if several inputs.
    Every shard's schema is checked here, so a bad shard stops the job before any is labelled."""
    out = resolve(cfg.out)
    pairs = []
    for i, uri in enumerate(cfg.shards):
        files = shard_files(uri)
        with ThreadPoolExecutor(16) as pool:  # footer reads are round trips to storage
            list(pool.map(check_shard, files))
        for f in files:
            name = posixpath.basename(f.path)
            if len(cfg.shards) > 1:
                name = f"in{i:02d}-{name}"
            pairs.append({"src": f.uri, "dst": out.join(name).uri})
    return pairs


def _quantiles(values: np.ndarray) -> dict:
    qs = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
    return {f"q{int(q * 100):02d}": float(v) for q, v in zip(qs, np.quantile(values, qs), strict=True)}


def teacher_stats(cfg: LabelConfig, sidecars: list[dict], directions: dict[str, bool]) -> dict:
    """Per teacher: its column, direction, options, and the spread of the labels it wrote."""
    columns = [spec.column for spec in cfg.teachers]
    values = {c: [] for c in columns}
    for side in sidecars:
        dst = resolve(side["dst"])
        table = pq.read_table(dst.path, filesystem=dst.fs, columns=columns)
        for c in columns:
            values[c].append(table.column(c).to_numpy(zero_copy_only=False))
    teachers = {}
    for spec in cfg.teachers:
        v = np.concatenate(values[spec.column]) if values[spec.column] else np.zeros(0)
        finite = v[np.isfinite(v)]
        teachers[spec.name] = {
            "column": spec.column,
            "higher_is_better": directions[spec.column],
            "options": spec.options,
            "count": int(len(finite)),
            "unscored": int(sum(s["unscored"][spec.column] for s in sidecars)),
            "mean": float(finite.mean()) if len(finite) else None,
            "std": float(finite.std()) if len(finite) else None,
            "quantiles": _quantiles(finite) if len(finite) else {},
        }
    return teachers


def teacher_metrics(teachers: dict) -> dict:
    """The teachers' numbers for tracking (``serfiq.mean``, ``serfiq.q05``, ...)."""
    return {name: {k: t[k] for k in ("count", "unscored", "mean", "std")} | t["quantiles"]
            for name, t in teachers.items()}


def run_label(cfg: LabelConfig) -> dict:
    """Label every shard not yet labelled, then write the summary and rejects of the whole output."""
    out = resolve(cfg.out)
    teachers = ", ".join(f"{t.name} -> {t.column}" for t in cfg.teachers)
    shape = Shape(out, out.name, inputs={"shards": cfg.shards, "teachers": teachers}, outputs={"shards": out.uri},
                  rerun="resume", lock=True)
    return run_job(cfg, shape, _work)


def _work(job: Job) -> Outcome:
    cfg = job.cfg
    # fail fast in the driver on a bad name or options (and learn each direction)
    directions = {t.column: create_teacher(t.name, **t.options).higher_is_better for t in cfg.teachers}
    pairs = plan(cfg)
    todo = [p for p in pairs if not sidecar(p["dst"]).exists()]
    if todo:
        labelled = map_actors(todo, Labeller, {"cfg": cfg}, cfg.resources)
        with Progress("label", "shards", len(todo)) as shown:
            for batch in labelled.iter_batches(batch_size=None, batch_format="numpy"):
                shown.advance(len(batch["dst"]))
    sidecars = [json.loads(sidecar(p["dst"]).read_text()) for p in pairs]
    rejects = [tuple(r) for s in sidecars for r in s["rejects"]]
    write_rejects(cfg.out, rejects)
    teachers = teacher_stats(cfg, sidecars, directions)
    counts = {"rows": int(sum(s["rows_out"] for s in sidecars)), "shards": len(sidecars),
              "resumed_shards": len(pairs) - len(todo),
              "dropped_rows": int(sum(s["rows_in"] - s["rows_out"] for s in sidecars)), "rejected": len(rejects)}
    return Outcome(counts=counts, rejects=count_reasons(rejects), fields={"out": job.out.uri, "teachers": teachers},
                   metrics=teacher_metrics(teachers))


def rejected(out: str) -> dict[str, str]:
    """image_id -> reason for the rows a label job could not (fully) label."""
    return {row["image_id"]: row["reason"] for row in read_rejects(out).to_pylist()}


JOB = JobKind("label", LabelConfig, run_label)
