"""The distillation job's driver: data plan, Ray Train run, resume, outputs.

A run lives at ``<storage>/<name>/``: Ray Train's own files and checkpoints (the newest
``keep_checkpoints``), the resolved ``config.json``, the best EMA student in ``best/``
(safetensors + card, rewritten whenever validation improves) and, when it ends,
``summary.json``.

Rerun contract: resume. Starting the same storage/name again continues from the latest
checkpoint (Ray Train's own notion of it, the one its workers load), mid-epoch: the
driver leaves out the whole row groups already consumed and the workers skip the rest.
A lost worker is replaced and resumes the same way (``max_failures``).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict

import numpy as np
import pyarrow.parquet as pq
import ray.train

from aikd.config import DistillConfig
from aikd.data.pipeline import face_pipeline, plan_units
from aikd.data.shards import shard_files
from aikd.data.split import held_out
from aikd.distill.loop import Plan
from aikd.distill.worker import BEST, SIDECAR, student_input_size, train_loop
from aikd.errors import AikdError
from aikd.job import finish, fit, latest_checkpoint, read_json
from aikd.models.weights import CARD_FILE
from aikd.runtime import ensure_ray
from aikd.storage import resolve


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


def run_distill(cfg: DistillConfig) -> dict:
    ensure_ray()
    if cfg.bootstrap is not None:
        from aikd.defaults import ensure_default_inputs

        ensure_default_inputs(cfg.bootstrap, upto="distill")
    cfg.data.require_input_size(student_input_size(cfg), "the student")
    run = resolve(cfg.storage).join(cfg.name)
    digest = config_hash(cfg)
    latest = latest_checkpoint(run)
    previous = read_json(latest, SIDECAR) if latest else None
    if previous and previous.get("config_hash") not in (None, digest):
        print(f"distill: note: resuming {run.uri} with a changed config (hash {previous['config_hash']} -> {digest})")
    run.join("config.json").write_text(cfg.model_dump_json(indent=2) + "\n")

    data = cfg.data.model_copy(update={"misaligned_view": True})
    units = plan_units(data)
    rows_per_epoch = sum(u.rows for u in units)
    plan = Plan.make(cfg, rows_per_epoch * (1.0 - data.val_fraction), cfg.resources.workers, label_stats(cfg))
    # A restarted run skips whole work units already consumed; the workers skip the rest.
    consumed = previous["consumed"] if previous else 0
    train = face_pipeline(data, "train", epochs=cfg.epochs, units=units, skip_rows=consumed)
    val = face_pipeline(data.model_copy(update={"val_misaligned": True}), "val", epochs=1, units=units)

    result = fit(
        train_loop, {"cfg": cfg.model_dump(), "plan": asdict(plan), "config_hash": digest, "run": run.uri,
                     "offset_samples": train.skipped_rows},
        cfg.resources, run, datasets={"train": train.dataset, "val": val.dataset},
        dataset_config=ray.train.DataConfig(datasets_to_split=["train"], execution_options={
            "train": _bounded_stream(cfg.data_buffer_mb), "val": _bounded_stream(cfg.data_buffer_mb)}),
        max_failures=cfg.max_failures, keep_checkpoints=cfg.keep_checkpoints)

    final = read_json(result.checkpoint, SIDECAR)
    best = run.join(BEST)
    return finish(run, {
        "job": "distill",
        "run": run.uri,
        "student": best.uri if best.join(CARD_FILE).exists() else None,
        "steps": final.get("step"),
        "consumed": final.get("consumed"),
        "plan": asdict(plan),
        "best_val_quality_loss": final.get("best_val"),
        "history": final.get("history", []),
        "rejected_train_rows": len(train.rejects()),
    })
