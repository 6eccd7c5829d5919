"""FR pretraining (``aikd fr-train``): a small IResNet with a margin head, on Ray Train.

No pretrained FR weights can be downloaded for the embedded default, so the platform
trains its own: aligned views from the streaming pipeline, identities held out whole
for verification, DDP across Ray Train workers (CPU or GPU). The result is a model
directory (safetensors + card) holding the backbone and, as an extra tensor, the margin
head's class centres, which the CR-FIQA teacher needs.

The Ray worker is a sequence of small functions fed only by its config.

Rerun contract: skip. A finished model (its ``summary.json`` written last) is returned
as it is; otherwise training starts from the beginning. A lost worker is replaced and
training restarts (``max_failures``; the loop keeps no mid-run checkpoint: FR
pretraining here is minutes long). Ray Train's run files live under ``<out>/_ray/`` while
it runs and are removed once the model is out.

The job is an MLflow run (rank 0 logs the training loss by step; the driver the
verification figures); with ``register:`` the model becomes a registered version that
other specs name as ``models:/<name>@<alias>``.
"""

from __future__ import annotations

import json
import os
import tempfile
import time

import pyarrow.compute as pc
import ray
import ray.train
import torch
import torch.nn as nn
from ray.train import Checkpoint

from aikd.config import FRTrainConfig
from aikd.data.pipeline import face_pipeline, plan_units
from aikd.data.schema import SUBJECT_ID
from aikd.data.shards import shard_files
from aikd.data.split import held_out
from aikd.errors import AikdError
from aikd.evaluate.verification import embed_batches, verification_report
from aikd.job import SUMMARY_FILE, finish, fit
from aikd.models import create_model
from aikd.models.heads import create_head
from aikd.models.weights import CENTRES, card_for, load_model, preprocess_of, save_model
from aikd.redact import redact
from aikd.registry import register
from aikd.runtime import ensure_ray, train_device
from aikd.storage import copy_tree, resolve
from aikd.tracking import Tracker, job_run, log_from_worker


class FRModel(nn.Module):
    """Backbone + margin head as one module, so DDP syncs both; forward returns the loss."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x), labels)


def training_classes(cfg: FRTrainConfig) -> list[str]:
    """Identities the head learns: every subject not held out for verification."""
    import pyarrow.parquet as pq

    subjects: set[str] = set()
    for uri in cfg.data.shards:
        for f in shard_files(uri):
            column = pq.read_table(f.path, filesystem=f.fs, columns=[SUBJECT_ID]).column(SUBJECT_ID)
            subjects.update(s for s in pc.unique(column).to_pylist() if s)
    ordered = sorted(subjects)
    out = held_out({SUBJECT_ID: ordered}, cfg.data)
    return [s for s, o in zip(ordered, out, strict=True) if not o]


def build_models(cfg: FRTrainConfig, num_classes: int) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(cfg.seed)  # same init on every rank and for the untrained baseline
    backbone = create_model(cfg.model, **cfg.model_args)
    head = create_head(cfg.head, backbone.fc.out_features, num_classes, scale=cfg.head_scale,
                       margin=cfg.head_margin)
    return backbone, head


# ---------------------------------------------------------------- the Ray worker
def _setup_threads(cfg: FRTrainConfig) -> None:
    if not cfg.resources.use_gpu:
        torch.set_num_threads(cfg.resources.threads)


def _poly_lr(cfg: FRTrainConfig, step: int, total: int) -> float:
    return cfg.lr * max(1.0 - step / max(total, 1), 0.0) ** 2


def _save_checkpoint(backbone: nn.Module, head: nn.Module, cfg: FRTrainConfig, classes: list[str],
                     metrics: dict, directory: str) -> None:
    card = card_for(backbone, "backbone", {"trained_by": "aikd fr-train", "head": cfg.head, "classes": classes,
                                           "data": redact(cfg.data.shards), "metrics": metrics})
    save_model(backbone, directory, card, extra={CENTRES: head.weight})


def fr_train_loop(config: dict) -> None:
    cfg = FRTrainConfig.model_validate(config["cfg"])
    classes: list[str] = config["classes"]
    _setup_threads(cfg)
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    device = train_device(cfg.resources.gpus_per_worker)
    backbone, head = build_models(cfg, len(classes))
    preprocess = preprocess_of(backbone)
    model = ray.train.torch.prepare_model(FRModel(backbone, head))
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                                momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    index = {s: i for i, s in enumerate(classes)}
    shard = ray.train.get_dataset_shard("train")
    step, seen, loss_sum, start = 0, 0, 0.0, time.perf_counter()
    total = config["total_steps"]
    tracker = Tracker.attach(config["tracking"]) if rank == 0 else None
    model.train()
    for batch in shard.iter_batches(batch_size=cfg.batch_size, batch_format="numpy", drop_last=True,
                                    local_shuffle_buffer_size=4 * cfg.batch_size, local_shuffle_seed=cfg.seed + rank):
        x = preprocess(batch["aligned"], device)
        y = torch.as_tensor([index[s] for s in batch["subject_id"]], device=device)
        for group in optimizer.param_groups:
            group["lr"] = _poly_lr(cfg, step, total)
        loss = model(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step, seen, loss_sum = step + 1, seen + len(y), loss_sum + loss.item()
        if rank == 0 and step % cfg.log_every == 0:
            rate = seen / (time.perf_counter() - start)
            print(f"fr-train step {step}/{total} loss {loss_sum / cfg.log_every:.3f} "
                  f"epoch {int(batch['epoch'][-1])} {rate:.0f} img/s/worker", flush=True)
            log_from_worker(tracker, {"train_loss": loss_sum / cfg.log_every, "images_per_s_per_worker": rate},
                            step, "fr-train")
            loss_sum = 0.0
    metrics = {"steps": step, "images_per_worker": seen,
               "images_per_s_per_worker": seen / max(time.perf_counter() - start, 1e-9)}
    if rank == 0:
        with tempfile.TemporaryDirectory() as tmp:
            _save_checkpoint(backbone, head, cfg, classes, metrics, tmp)
            ray.train.report(metrics, checkpoint=Checkpoint.from_directory(tmp))
    else:
        ray.train.report(metrics)


# ---------------------------------------------------------------- the driver
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
    if out.join(SUMMARY_FILE).exists():  # finished before: skip
        return json.loads(out.join(SUMMARY_FILE).read_text()) | {"skipped": True}
    ensure_ray()
    if cfg.bootstrap is not None:
        from aikd.defaults import ensure_default_inputs

        ensure_default_inputs(cfg.bootstrap, upto="fr-train")
    with job_run(cfg, out.name, inputs={"shards": cfg.data.shards},
                 outputs={"model": out.uri}) as tracker:
        summary = _train(cfg, out, tracker) | {"mlflow_run": tracker.run_id if tracker else None}
        if tracker is not None:
            tracker.log_metrics({"verification": summary["verification"], "train": summary["train"]})
        if cfg.register is not None:
            summary["registered"] = register(
                out, cfg.register, tracker, spec=cfg.model_dump(mode="json"), onnx=False,
                tags={"aikd.data": ", ".join(cfg.data.shards), "aikd.source_run": tracker.run_id,
                      "aikd.architecture": cfg.model, "aikd.classes": summary["classes"]}
                | {f"verification.{k}": v for k, v in summary["verification"].items() if isinstance(v, (int, float))},
                description=f"FR backbone {cfg.model} trained by aikd fr-train on {', '.join(cfg.data.shards)} "
                            f"({summary['classes']} identities); the margin head's class centres are stored beside "
                            f"it in model.safetensors (extra.class_centres).")
            print(f"fr-train: registered {summary['registered']['uri']}", flush=True)
        finish(out, summary)
        if tracker is not None:
            tracker.log_outputs(out, [SUMMARY_FILE])
    return summary


def _train(cfg: FRTrainConfig, out, tracker: Tracker | None) -> dict:
    """Train, copy the model out, verify trained vs untrained backbones; the summary."""
    cfg.data.require_input_size(create_model(cfg.model, **cfg.model_args).input_size, cfg.model)
    classes = training_classes(cfg)
    if len(classes) < 2:
        raise AikdError(f"need at least 2 training identities with subject_id, found {len(classes)}")
    data = cfg.data.model_copy(update={"misaligned_view": False})
    units = plan_units(data)
    pipeline = face_pipeline(data, "train", epochs=cfg.epochs, units=units)
    train_rows = pipeline.rows_per_epoch * (1.0 - data.val_fraction) * cfg.epochs
    total_steps = max(int(train_rows // (cfg.batch_size * cfg.resources.workers)), 1)
    run = out.join("_ray", "fr-train")
    if run.exists():  # an unfinished earlier attempt: training starts over
        run.fs.delete_dir(run.path)
    result = fit(fr_train_loop, {"cfg": cfg.model_dump(), "classes": classes, "total_steps": total_steps,
                                 "tracking": tracker.ref if tracker else None},
                 cfg.resources, run, datasets={"train": pipeline.dataset}, max_failures=cfg.max_failures)
    with result.checkpoint.as_directory() as directory:
        copy_tree(resolve(directory), out)
    run.fs.delete_dir(run.parent().path)  # nothing resumes from it (the rerun contract): a clean model dir

    trained, _ = load_model(cfg.out)
    torch.set_num_threads(max(os.cpu_count() or 1, 1))
    untrained, _ = build_models(cfg, len(classes))
    return {
        "job": "fr-train",
        "out": out.uri,
        "classes": len(classes),
        "train": {k: v for k, v in result.metrics.items() if isinstance(v, (int, float))},
        "rejected": len(pipeline.rejects()),
        "verification": verify(trained, cfg),
        "verification_untrained": verify(untrained, cfg),
    }
