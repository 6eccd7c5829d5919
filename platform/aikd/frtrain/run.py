"""FR pretraining (``aikd fr-train``): a small IResNet with a margin head, on Ray Train.

No pretrained FR weights can be downloaded for the embedded default, so the platform
trains its own: aligned views from the streaming pipeline, identities held out whole
for verification, DDP across Ray Train workers (CPU or GPU). The result is a model
directory (safetensors + card + the spec that made it) holding the backbone and, as an
extra tensor, the margin head's class centres, which the CR-FIQA teacher needs.

Rerun contract: skip a finished model, resume an unfinished one. A model whose summary
exists is returned as it is; otherwise training continues from the latest checkpoint
under ``<out>/_ray/`` (every ``checkpoint_every`` steps, mid-epoch), as does a run
whose lost worker was replaced (``max_failures``). Ray Train's run files are removed
once the model is out.

The job is an MLflow run (rank 0 logs the training loss by step; the driver the
verification figures); with ``register:`` the model becomes a registered version that
other specs name as ``models:/<name>@<alias>``.
"""

from __future__ import annotations

import hashlib
import os

import torch
import torch.nn as nn

from aikd.config import FRTrainConfig
from aikd.data.pipeline import face_pipeline, plan_units
from aikd.errors import AikdError
from aikd.evaluate.verification import embed_batches, verification_report
from aikd.frtrain.model import build_models, training_classes
from aikd.frtrain.worker import SIDECAR, fr_train_loop
from aikd.job import Job, Outcome, Shape, count_reasons, run_job
from aikd.jobs import JobKind
from aikd.models import resolve_model_info
from aikd.models.weights import CARD_FILE, SPEC_FILE, WEIGHTS_FILE, load_model, preprocess_of
from aikd.progress import watch
from aikd.registry import register
from aikd.storage import Location, resolve
from aikd.training import fit, latest_checkpoint, read_json

MODEL_FILES = (WEIGHTS_FILE, CARD_FILE, SPEC_FILE)  # what the model directory keeps of the last checkpoint


def verify(backbone: nn.Module, cfg: FRTrainConfig) -> dict:
    """TAR at FAR on the held-out identities, aligned views."""
    data = cfg.data.model_copy(update={"misaligned_view": False})
    batches = face_pipeline(data, "val").dataset.iter_batches(batch_size=256, batch_format="numpy")
    embeddings, subjects, _ = embed_batches(backbone, batches, preprocess_of(backbone))
    report = verification_report(embeddings, subjects)
    report["identities"] = int(len(set(subjects)))
    return report


def run_fr_train(cfg: FRTrainConfig) -> dict:
    out = resolve(cfg.out)
    shape = Shape(out, out.name, inputs={"shards": cfg.data.shards}, outputs={"model": out.uri}, rerun="resume",
                  skip_finished=True)
    return run_job(cfg, shape, _work)


def _work(job: Job) -> Outcome:
    cfg, out = job.cfg, job.out
    fields, rejects = _train(cfg, out, job)
    if job.tracker is not None:
        job.tracker.log_metrics({"verification": fields["verification"], "train": fields["train"]})
    if cfg.register is not None:
        fields["registered"] = _register(cfg, out, job, fields)
        job.log(f"registered {fields['registered']['uri']}")
    return Outcome(counts={"classes": fields["classes"], "steps": fields["train"]["steps"],
                           "rejected": sum(rejects.values())}, rejects=rejects, fields=fields)


def _register(cfg: FRTrainConfig, out: Location, job: Job, fields: dict) -> dict:
    tags = {"aikd.data": ", ".join(cfg.data.shards), "aikd.source_run": job.tracker.run_id,
            "aikd.architecture": cfg.model, "aikd.classes": fields["classes"]}
    tags |= {f"verification.{k}": v for k, v in fields["verification"].items() if isinstance(v, (int, float))}
    return register(out, cfg.register, job.tracker, spec=cfg.model_dump(mode="json"), onnx=False, tags=tags,
                    description=f"FR backbone {cfg.model} trained by aikd fr-train on {', '.join(cfg.data.shards)} "
                                f"({fields['classes']} identities); the margin head's class centres are stored "
                                f"beside it in model.safetensors (extra.class_centres).")


def config_hash(cfg: FRTrainConfig) -> str:
    return hashlib.sha256(cfg.model_dump_json(exclude={"tracking", "register"}).encode()).hexdigest()[:16]


def _train(cfg: FRTrainConfig, out: Location, job: Job) -> tuple[dict, dict]:
    """Train (resuming from the latest checkpoint), copy the model out, verify trained vs untrained backbones."""
    cfg.data.require_input_size(resolve_model_info(cfg.model, **cfg.model_args).input_size, cfg.model)
    classes = training_classes(cfg)
    if len(classes) < 2:
        raise AikdError(f"need at least 2 training identities with subject_id, found {len(classes)}")
    data = cfg.data.model_copy(update={"misaligned_view": False})
    units = plan_units(data)
    run = out.join("_ray", "fr-train")
    latest = latest_checkpoint(run)
    previous = read_json(latest, SIDECAR) if latest else None
    if previous and previous.get("config_hash") != config_hash(cfg):
        raise AikdError(f"{run.uri} holds a checkpoint of another fr-train spec: give a new out, or delete "
                        f"{out.join('_ray').uri} to start over")
    consumed = previous["consumed"] if previous else 0
    pipeline = face_pipeline(data, "train", epochs=cfg.epochs, units=units, skip_rows=consumed)
    train_rows = sum(u.rows for u in units) * (1.0 - data.val_fraction) * cfg.epochs
    total_steps = max(int(train_rows // (cfg.batch_size * cfg.resources.workers)), 1)
    with watch("fr-train", "steps", total_steps) as board:
        result = fit(fr_train_loop, {"cfg": cfg.model_dump(), "classes": classes, "total_steps": total_steps,
                                     "config_hash": config_hash(cfg), "offset_samples": pipeline.skipped_rows,
                                     "tracking": job.tracker.ref if job.tracker else None, "board": board},
                     cfg.resources, run, datasets={"train": pipeline.dataset}, max_failures=cfg.max_failures,
                     keep_checkpoints=2)
    for name in MODEL_FILES:
        _copy(result.checkpoint, name, out)
    run.fs.delete_dir(run.parent().path)  # nothing resumes from a finished model: a clean model dir

    trained, _ = load_model(cfg.out)
    torch.set_num_threads(max(os.cpu_count() or 1, 1))
    untrained, _ = build_models(cfg, len(classes))
    rejects = count_reasons(pipeline.rejects())
    fields = {"out": out.uri, "classes": len(classes), "resumed_from_step": previous["step"] if previous else 0,
              "train": {k: v for k, v in result.metrics.items() if isinstance(v, (int, float))},
              "verification": verify(trained, cfg), "verification_untrained": verify(untrained, cfg)}
    return fields, rejects


def _copy(checkpoint, name: str, out: Location) -> None:
    with checkpoint.filesystem.open_input_stream(f"{checkpoint.path}/{name}") as f:
        out.join(name).write_bytes(f.read())


JOB = JobKind("fr-train", FRTrainConfig, run_fr_train)
