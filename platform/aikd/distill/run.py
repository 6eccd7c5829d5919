"""The distillation job's driver: data plan, TorchTrainer, resume, outputs.

A run lives at ``<storage>/<name>/``: Ray Train's checkpoints (``checkpoint_*``), the
resolved ``config.json``, and when it ends ``student/`` (the best EMA student,
safetensors + card) and ``summary.json``. Starting the same storage/name again resumes
from the latest checkpoint; a lost worker is replaced and resumes the same way
(``FailureConfig``).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict

import ray.train
from ray.train import FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from aikd.config import DistillConfig
from aikd.data.pipeline import face_pipeline, plan_units
from aikd.distill.loop import Plan
from aikd.distill.worker import BEST, SIDECAR, train_loop
from aikd.runtime import JobFailed, ensure_ray
from aikd.storage import Location, resolve


def config_hash(cfg: DistillConfig) -> str:
    return hashlib.sha256(cfg.model_dump_json().encode()).hexdigest()[:16]


def checkpoint_dirs(run: Location) -> list[Location]:
    """A run's Ray Train checkpoint directories, newest first (their names carry a timestamp)."""
    if not run.exists():
        return []
    from pyarrow.fs import FileSelector, FileType

    names = [os.path.basename(i.path) for i in run.fs.get_file_info(FileSelector(run.path))
             if i.type == FileType.Directory and os.path.basename(i.path).startswith("checkpoint_")]
    return [run.join(name) for name in sorted(names, reverse=True)]


def latest_sidecar(run: Location) -> dict | None:
    """The sidecar of the newest complete checkpoint of a run, if any."""
    for checkpoint in checkpoint_dirs(run):
        sidecar = checkpoint.join(SIDECAR)
        if sidecar.exists():
            return json.loads(sidecar.read_text())
    return None


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
    import numpy as np
    import pyarrow.parquet as pq

    from aikd.data.pipeline import is_validation, stable_hash
    from aikd.data.shards import shard_files

    key, label = cfg.data.split_by, cfg.data.label
    values = []
    for uri in cfg.data.shards:
        for f in shard_files(uri):
            t = pq.read_table(f.path, filesystem=f.fs, columns=list({key, label}))
            train = ~is_validation(stable_hash(t.column(key).to_pylist(), cfg.data.seed), cfg.data.val_fraction)
            values.append(t.column(label).to_numpy(zero_copy_only=False)[train])
    v = np.concatenate(values).astype(np.float64)
    v = v[np.isfinite(v)]
    if len(v) < 2 or v.std() == 0:
        raise ValueError(f"label {label} has no spread on the training split: cannot standardise")
    return float(v.mean()), float(v.std())


def _copy_tree(src: Location, dst: Location) -> None:
    for f in src.list_files():
        rel = os.path.relpath(f.path, src.path)
        dst.join(rel).write_bytes(f.read_bytes())


def run_distill(cfg: DistillConfig) -> dict:
    ensure_ray()
    if cfg.bootstrap is not None:
        from aikd.defaults import ensure_default_inputs

        ensure_default_inputs(cfg.bootstrap)
    storage = resolve(cfg.storage)
    run = storage.join(cfg.name)
    digest = config_hash(cfg)
    previous = latest_sidecar(run)
    if previous and previous.get("config_hash") not in (None, digest):
        print(f"distill: note: resuming {run.uri} with a changed config (hash {previous['config_hash']} -> {digest})")
    run.join("config.json").write_text(cfg.model_dump_json(indent=2) + "\n")

    data = cfg.data.model_copy(update={"misaligned_view": True})
    units = plan_units(data)
    rows_per_epoch = sum(u.rows for u in units)
    plan = Plan.make(cfg, rows_per_epoch * (1.0 - data.val_fraction), cfg.workers, label_stats(cfg))
    # A restarted run skips whole work units already consumed; the workers skip the rest.
    consumed = previous["consumed"] if previous else 0
    train = face_pipeline(data, "train", epochs=cfg.epochs, units=units, skip_rows=consumed)
    val = face_pipeline(data.model_copy(update={"val_misaligned": True}), "val", epochs=1, units=units)

    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"cfg": cfg.model_dump(), "plan": asdict(plan), "config_hash": digest,
                           "offset_samples": train.skipped_rows},
        scaling_config=ScalingConfig(num_workers=cfg.workers, use_gpu=cfg.use_gpu,
                                     resources_per_worker={"CPU": cfg.cpus_per_worker}),
        run_config=RunConfig(name=cfg.name, storage_path=storage.path, storage_filesystem=storage.fs,
                             failure_config=FailureConfig(max_failures=cfg.max_failures)),
        datasets={"train": train.dataset, "val": val.dataset},
        dataset_config=ray.train.DataConfig(datasets_to_split=["train"], execution_options={
            "train": _bounded_stream(cfg.data_buffer_mb), "val": _bounded_stream(cfg.data_buffer_mb)}),
    )
    result = trainer.fit()
    if result.error:
        raise JobFailed(f"distillation run {run.uri} failed: {result.error}")

    final = latest_sidecar(run) or {}
    best = _best_student_dir(run)
    if best is not None:
        _copy_tree(best, run.join("student"))
    summary = {
        "run": run.uri,
        "student": run.join("student").uri if best is not None else None,
        "steps": final.get("step"),
        "consumed": final.get("consumed"),
        "plan": asdict(plan),
        "best_val_quality_loss": final.get("best_val"),
        "history": final.get("history", []),
        "rejected_train_rows": len(train.rejects()),
    }
    run.join("summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _best_student_dir(run: Location) -> Location | None:
    """The newest checkpoint that holds a best student (checkpoints keep it only when it improved)."""
    for checkpoint in checkpoint_dirs(run):
        candidate = checkpoint.join(BEST)
        if candidate.join("card.json").exists():
            return candidate
    return None
