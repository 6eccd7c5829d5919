"""The distillation job's driver: data plan, Ray Train run, resume, outputs.

A run lives at ``<storage>/<name>/``: Ray Train's own files and checkpoints (the newest
``keep_checkpoints``), the resolved ``config.json``, the best EMA student in ``best/``
(safetensors + card + the spec, rewritten whenever validation improves) and, when it
ends, ``_summary.json``. The run is also an MLflow run (docs/tracking.md): rank 0 logs every
validation by step, and with ``register:`` the best student becomes a new version of a
registered model (safetensors + card + spec + ONNX) whose aliases move to it.

Rerun contract: resume. Starting the same storage/name again continues from the latest
checkpoint (Ray Train's own notion of it, the one its workers load), mid-epoch: the
driver leaves out the whole row groups already consumed and the workers skip the rest.
A lost worker is replaced and resumes the same way (``max_failures``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow.parquet as pq
import ray.train

from aikd.config import DistillConfig
from aikd.data.pipeline import WorkUnit, face_pipeline, logged_rejects, plan_units, reject_log
from aikd.data.shards import shard_files
from aikd.data.split import held_out
from aikd.distill.loop import Plan
from aikd.distill.worker import BEST, SIDECAR, student_input_size, train_loop
from aikd.errors import AikdError
from aikd.job import Job, Outcome, Shape, count_reasons, run_job
from aikd.jobs import JobKind
from aikd.models.weights import CARD_FILE, read_card
from aikd.progress import watch
from aikd.redact import redact
from aikd.registry import register
from aikd.storage import Location, resolve
from aikd.tracking import Tracker
from aikd.training import fit, latest_checkpoint, read_json

CONFIG_FILE = "config.json"


def config_hash(cfg: DistillConfig) -> str:
    return hashlib.sha256(cfg.model_dump_json().encode()).hexdigest()[:16]


def _bounded_stream(megabytes: int):
    """Execution options that keep a stream's produced-but-unconsumed data under a budget."""
    from ray.data import ExecutionOptions, ExecutionResources

    options = ExecutionOptions()
    options.resource_limits = ExecutionResources(object_store_memory=megabytes * 2**20)
    return options


def label_stats(cfg: DistillConfig) -> tuple[float, float]:
    """Mean and std of the finite training-split labels (identity when scaling is off)."""
    if cfg.objective.label_scaling == "none":
        return 0.0, 1.0
    key, label = cfg.data.split_by, cfg.data.label
    values = []
    for uri in cfg.data.shards:
        for f in shard_files(uri):
            t = pq.read_table(f.path, filesystem=f.fs, columns=list({key, label}))
            train = ~held_out({key: t.column(key).to_pylist()}, cfg.data)
            values.append(t.column(label).to_numpy(zero_copy_only=False)[train])
    v = np.concatenate(values).astype(np.float64)
    v = v[np.isfinite(v)]
    if len(v) < 2 or v.std() == 0:
        raise AikdError(f"label {label} has no spread on the training split: cannot standardise")
    return float(v.mean()), float(v.std())


def _stats_key(cfg: DistillConfig) -> str:
    d = cfg.data
    return json.dumps([d.shards, d.label, d.split_by, d.val_fraction, d.seed, cfg.objective.label_scaling])


@dataclass(frozen=True)
class SharedWork:
    """What runs over the same shards share, computed once for all of a sweep's trials: the data
    plan (every row group, schemas checked) and the label statistics of each teacher column."""

    shards: tuple[str, ...]
    units: list[WorkUnit]
    stats: dict[str, tuple[float, float]]

    @classmethod
    def make(cls, cfg: DistillConfig, labels: list[str]) -> SharedWork:
        variants = [cfg.model_copy(update={"data": cfg.data.model_copy(update={"label": label})}) for label in labels]
        return cls(tuple(cfg.data.shards), plan_units(cfg.data), {_stats_key(v): label_stats(v) for v in variants})

    def units_for(self, cfg: DistillConfig) -> list[WorkUnit]:
        return self.units if tuple(cfg.data.shards) == self.shards else plan_units(cfg.data)

    def stats_for(self, cfg: DistillConfig) -> tuple[float, float]:
        return self.stats.get(_stats_key(cfg)) or label_stats(cfg)


def register_student(cfg: DistillConfig, run: Location, tracker: Tracker, summary: dict,
                     extra_tags: dict | None = None) -> dict:
    """The run's best student as a new registered version, described by its lineage and metrics."""
    best = run.join(BEST)
    card = read_card(best.uri)
    data = cfg.data
    misalignment = f"{data.misalignment:g} {'x inter-ocular distance' if data.misalignment_relative else 'px'}"
    tags = {"aikd.teacher": data.label, "aikd.misalignment": misalignment, "aikd.data": ", ".join(data.shards),
            "aikd.init": cfg.student.weights, "aikd.source_run": tracker.run_id, "aikd.run_uri": run.uri,
            "aikd.steps": summary["steps"]}
    tags |= {f"aikd.init.{m['field']}": m["resolved_uri"] for m in summary["models"]}
    tags |= {f"val.{k}": v for k, v in card.lineage.get("metrics", {}).items() if isinstance(v, (int, float))}
    tags |= extra_tags or {}
    size = card.input_size
    description = (
        f"AI-KD student ({card.architecture}) distilled from teacher {data.label} with misalignment {misalignment}, "
        f"{summary['steps']} optimizer steps, run {run.uri}.\n\n"
        f"Files: model.safetensors + card.json (aikd.models.weights.load_model), spec.yaml (the job spec), "
        f"model.onnx: input 'image' float32 Nx3x{size}x{size}, RGB face aligned to the 5-point template, "
        f"(pixel / 255 - mean) / std with mean {list(card.mean)} and std {list(card.std)}; outputs 'embedding' "
        f"and 'quality' (higher is better).")
    return register(best, cfg.register, tracker, spec=cfg.model_dump(mode="json"), tags=tags,
                    description=description, onnx=True)


def run_distill(cfg: DistillConfig, *, shared: SharedWork | None = None, callbacks: list | None = None,
                tags: dict | None = None) -> dict:
    """The distillation job. A sweep's trial passes the work its trials share, the Ray Train
    callback that hands reports to Tune, and the tags naming its sweep."""
    run = resolve(cfg.storage).join(cfg.name)
    shape = Shape(run, cfg.name, inputs={"shards": cfg.data.shards, "student": cfg.student.weights},
                  outputs={"run": run.uri}, rerun="resume", tags=tags)
    return run_job(cfg, shape, lambda job: _work(job, shared, callbacks))


def _work(job: Job, shared: SharedWork | None, callbacks: list | None) -> Outcome:
    cfg, run = job.cfg, job.out
    fields, rejected, rejects = _distill(cfg, run, job.tracker, shared, callbacks)
    if cfg.register is not None and fields["student"] is not None:
        fields["registered"] = register_student(cfg, run, job.tracker, fields | {"models": job.models})
        job.log(f"registered {fields['registered']['uri']} (aliases: {', '.join(cfg.register.aliases) or 'none'})")
    counts = {"steps": fields["steps"], "consumed": fields["consumed"]} | rejected
    return Outcome(counts=counts, rejects=rejects, fields=fields, files=[CONFIG_FILE])


def _distill(cfg: DistillConfig, run: Location, tracker: Tracker | None, shared: SharedWork | None = None,
             callbacks: list | None = None) -> tuple[dict, dict, dict]:
    """The Ray Train run itself: data plan, resume, fit; its summary fields, reject counts and reasons."""
    cfg.data.require_input_size(student_input_size(cfg), "the student")
    digest = config_hash(cfg)
    latest = latest_checkpoint(run)
    previous = read_json(latest, SIDECAR) if latest else None
    if previous and previous.get("config_hash") not in (None, digest):
        print(f"distill: note: resuming {run.uri} with a changed config (hash {previous['config_hash']} -> {digest})")
    run.join(CONFIG_FILE).write_text(json.dumps(redact(cfg.model_dump(mode="json")), indent=2) + "\n")

    data = cfg.data.model_copy(update={"misaligned_view": True})
    units = shared.units_for(cfg) if shared else plan_units(data)
    stats = shared.stats_for(cfg) if shared else label_stats(cfg)
    rows_per_epoch = sum(u.rows for u in units)
    plan = Plan.make(cfg, rows_per_epoch * (1.0 - data.val_fraction), cfg.resources.workers, stats)
    # A restarted run skips whole work units already consumed; the workers skip the rest.
    consumed = previous["consumed"] if previous else 0
    train = face_pipeline(data, "train", epochs=cfg.epochs, units=units, skip_rows=consumed)
    # validation rows are read by the rank that validates (split_batches), their rejects logged here
    val = {"data": data.model_copy(update={"val_misaligned": True}).model_dump(),
           "units": [asdict(u) for u in units], "log": reject_log()}

    # a sweep's trial (it has callbacks) shows one line when it ends, not a bar
    with contextlib.nullcontext() if callbacks else watch("distill", "steps", plan.total_steps) as board:
        result = fit(
            train_loop, {"cfg": cfg.model_dump(), "plan": asdict(plan), "config_hash": digest, "run": run.uri,
                         "offset_samples": train.skipped_rows, "tracking": tracker.ref if tracker else None,
                         "board": board, "val": val},
            cfg.resources, run, datasets={"train": train.dataset},
            dataset_config=ray.train.DataConfig(datasets_to_split=["train"], execution_options={
                "train": _bounded_stream(cfg.data_buffer_mb)}),
            max_failures=cfg.max_failures, keep_checkpoints=cfg.keep_checkpoints, callbacks=callbacks)

    final = read_json(result.checkpoint, SIDECAR)
    best = run.join(BEST)
    # the validation rows counted are those read (at most val_limit are)
    train_rejects, val_rejects = train.rejects(), logged_rejects(val["log"])
    counts = {"rejected_train_rows": len(train_rejects), "rejected_val_rows": len(val_rejects)}
    return {
        "run": run.uri,
        "student": best.uri if best.join(CARD_FILE).exists() else None,
        "steps": final.get("step"),
        "consumed": final.get("consumed"),
        "plan": asdict(plan),
        "selected_by": cfg.validation.select,
        f"best_{cfg.validation.select}": final.get("best_val"),
        "history": final.get("history", []),
    }, counts, count_reasons(train_rejects + val_rejects)


JOB = JobKind("distill", DistillConfig, run_distill)
