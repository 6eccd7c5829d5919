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
import pyarrow as pa
import pyarrow.parquet as pq

from aikd.actor_pool import map_actors
from aikd.config import LabelConfig
from aikd.data.pipeline import aligned_views, decode_valid
from aikd.data.schema import IMAGE_ID, SUBJECT_ID, validate_schema
from aikd.data.shards import SUMMARY_FILE, check_shard, read_rejects, shard_files, write_rejects, write_shard
from aikd.job import finish
from aikd.lock import output_lock
from aikd.registry import resolve_models
from aikd.runtime import ensure_ray
from aikd.storage import Location, resolve
from aikd.teachers import TeacherBatch, create_teacher
from aikd.tracking import job_run

PROGRESS_DIR = "_progress"  # one JSON sidecar per finished shard


class Labeller:
    """Actor: holds the teachers (models loaded once) and labels whole shards."""

    def __init__(self, cfg: LabelConfig):
        import cv2

        cv2.setNumThreads(1)
        self.cfg = cfg
        # a teacher that runs a model finds its device from what Ray gave this actor
        self.teachers = [(spec, create_teacher(spec.name, **spec.options)) for spec in cfg.teachers]
        self.needs_images = any(t.needs_images for _, t in self.teachers)

    def __call__(self, items: dict) -> dict:
        done = [self.label_shard(str(src), str(dst)) for src, dst in zip(items["src"], items["dst"], strict=True)]
        return {"dst": [d["dst"] for d in done], "rows_out": [d["rows_out"] for d in done]}

    def label_shard(self, src: str, dst: str) -> dict:
        source = resolve(src)
        table = pq.read_table(source.path, filesystem=source.fs)
        validate_schema(table.schema, source.uri)
        kept, columns, rejects = [], {spec.column: [] for spec, _ in self.teachers}, []
        unscored = {spec.column: 0 for spec, _ in self.teachers}
        for start in range(0, table.num_rows, self.cfg.batch_size):
            part = table.slice(start, self.cfg.batch_size)
            batch = {n: part.column(n).to_numpy(zero_copy_only=False) for n in part.column_names}
            rows = np.arange(part.num_rows)
            if self.needs_images:
                rows, images, landmarks, bad = decode_valid(batch, rows)
                rejects += bad
                crops: dict[int, np.ndarray] = {}
            for spec, teacher in self.teachers:
                aligned = None
                if teacher.needs_images:
                    size = teacher.input_size
                    if size not in crops:
                        crops[size] = aligned_views(images, landmarks[rows], size)
                    aligned = crops[size]
                scores = teacher.score(TeacherBatch(
                    image_ids=batch[IMAGE_ID][rows], subject_ids=np.asarray(batch[SUBJECT_ID])[rows],
                    aligned=aligned, columns={k: np.asarray(v)[rows] for k, v in batch.items()}))
                columns[spec.column].append(scores.values)
                unscored[spec.column] += len(scores.reasons)
                rejects += [(str(batch[IMAGE_ID][rows[i]]), f"{spec.column}: {why}") for i, why in
                            scores.reasons.items()]
            kept.append(rows + start)
        out = table.take(pa.array(np.concatenate(kept) if kept else np.zeros(0, np.int64)))
        for name, parts in columns.items():
            values = pa.array(np.concatenate(parts) if parts else np.zeros(0, np.float32), pa.float32())
            if name in out.column_names:
                out = out.set_column(out.schema.get_field_index(name), name, values)
            else:
                out = out.append_column(pa.field(name, pa.float32()), values)
        write_shard(resolve(dst), out)
        sidecar = {"src": src, "dst": dst, "rows_in": table.num_rows, "rows_out": out.num_rows,
                   "rejects": rejects, "unscored": unscored}
        # written after the shard: a sidecar means the shard is complete
        _sidecar(dst).write_text(json.dumps(sidecar))
        return sidecar


def _sidecar(dst: str):
    location = resolve(dst)
    return location.parent().join(PROGRESS_DIR, posixpath.basename(location.path) + ".json")


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


def summarise(cfg: LabelConfig, sidecars: list[dict], directions: dict[str, bool]) -> dict:
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
    dropped = sum(s["rows_in"] - s["rows_out"] for s in sidecars)
    return {"job": "label", "out": resolve(cfg.out).uri, "rows": int(sum(s["rows_out"] for s in sidecars)),
            "shards": len(sidecars),
            "dropped_rows": int(dropped), "rejected": int(sum(len(s["rejects"]) for s in sidecars)),
            "teachers": teachers}


def summary_metrics(summary: dict) -> dict:
    """The summary's numbers for tracking (``serfiq.mean``, ``serfiq.q05``, ...)."""
    out = {k: summary[k] for k in ("rows", "shards", "dropped_rows", "rejected", "resumed_shards")}
    for name, t in summary["teachers"].items():
        out[name] = {k: t[k] for k in ("count", "unscored", "mean", "std")} | t["quantiles"]
    return out


def run_label(cfg: LabelConfig) -> dict:
    """Label every shard not yet labelled, then write the summary and rejects of the whole output."""
    out = resolve(cfg.out)
    with output_lock(out, "label"):  # before any Ray work: a second job on this output refuses at once
        return _run_label(cfg, out)


def _run_label(cfg: LabelConfig, out: Location) -> dict:
    ensure_ray()
    if cfg.bootstrap is not None:
        from aikd.defaults import ensure_default_inputs

        ensure_default_inputs(cfg.bootstrap, upto="label")
    cfg, models = resolve_models(cfg, out)
    teachers = ", ".join(f"{t.name} -> {t.column}" for t in cfg.teachers)
    with job_run(cfg, out.name, inputs={"shards": cfg.shards, "teachers": teachers},
                 outputs={"shards": out.uri}, resume_under=out) as tracker:
        # fail fast in the driver on a bad name or options (and learn each direction)
        directions = {t.column: create_teacher(t.name, **t.options).higher_is_better for t in cfg.teachers}
        pairs = plan(cfg)
        todo = [p for p in pairs if not _sidecar(p["dst"]).exists()]
        if todo:
            map_actors(todo, Labeller, {"cfg": cfg}, cfg.resources).take_all()
        sidecars = [json.loads(_sidecar(p["dst"]).read_text()) for p in pairs]
        write_rejects(cfg.out, [tuple(r) for s in sidecars for r in s["rejects"]])
        summary = summarise(cfg, sidecars, directions) | {"resumed_shards": len(pairs) - len(todo), "models": models,
                                                          "mlflow_run": tracker.run_id if tracker else None}
        finish(out, summary, SUMMARY_FILE)
        if tracker is not None:
            tracker.log_metrics(summary_metrics(summary))
            tracker.log_outputs(out, [SUMMARY_FILE])
    return summary


def rejected(out: str) -> dict[str, str]:
    """image_id -> reason for the rows a label job could not (fully) label."""
    return {row["image_id"]: row["reason"] for row in read_rejects(out).to_pylist()}
