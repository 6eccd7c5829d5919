"""FR pretraining (``aikd fr-train``): a small IResNet with a margin head, on Ray Train.

No pretrained FR weights can be downloaded for the embedded default, so the platform
trains its own: aligned views from the streaming pipeline, identities held out whole
for verification, DDP across Ray Train workers (CPU or GPU). The result is a model
directory (safetensors + card) holding the backbone and, as an extra tensor, the margin
head's class centres, which the CR-FIQA teacher needs.

The Ray worker is a sequence of small functions fed only by its config.
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
from ray.train import Checkpoint, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from aikd.config import FRTrainConfig
from aikd.data.pipeline import face_pipeline, is_validation, plan_units, stable_hash
from aikd.data.schema import SUBJECT_ID
from aikd.data.shards import shard_files
from aikd.evaluate.verification import embed_batches, verification_report
from aikd.models import create_model
from aikd.models.heads import create_head
from aikd.models.transforms import to_input
from aikd.models.weights import WEIGHTS_FILE, card_for, load_model, read_tensors, save_model
from aikd.runtime import ensure_ray
from aikd.storage import resolve

CENTRES = "class_centres"


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
    held_out = is_validation(stable_hash(ordered, cfg.data.seed), cfg.data.val_fraction)
    return [s for s, out in zip(ordered, held_out, strict=True) if not out]


def build_models(cfg: FRTrainConfig, num_classes: int) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(cfg.seed)  # same init on every rank and for the untrained baseline
    backbone = create_model(cfg.model, **cfg.model_args)
    head = create_head(cfg.head, backbone.fc.out_features, num_classes, scale=cfg.head_scale,
                       margin=cfg.head_margin)
    return backbone, head


# ---------------------------------------------------------------- the Ray worker
def _setup_threads(cfg: FRTrainConfig) -> None:
    if not cfg.use_gpu:
        torch.set_num_threads(max(1, int(cfg.cpus_per_worker)))


def _poly_lr(cfg: FRTrainConfig, step: int, total: int) -> float:
    return cfg.lr * max(1.0 - step / max(total, 1), 0.0) ** 2


def _save_checkpoint(backbone: nn.Module, head: nn.Module, cfg: FRTrainConfig, classes: list[str],
                     metrics: dict, directory: str) -> None:
    card = card_for(backbone, "backbone", {"trained_by": "aikd fr-train", "head": cfg.head, "classes": classes,
                                           "data": cfg.data.shards, "metrics": metrics})
    save_model(backbone, directory, card, extra={CENTRES: head.weight})


def fr_train_loop(config: dict) -> None:
    cfg = FRTrainConfig.model_validate(config["cfg"])
    classes: list[str] = config["classes"]
    _setup_threads(cfg)
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    device = ray.train.torch.get_device()
    backbone, head = build_models(cfg, len(classes))
    model = ray.train.torch.prepare_model(FRModel(backbone, head))
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                                momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    index = {s: i for i, s in enumerate(classes)}
    shard = ray.train.get_dataset_shard("train")
    step, seen, loss_sum, start = 0, 0, 0.0, time.perf_counter()
    total = config["total_steps"]
    model.train()
    for batch in shard.iter_batches(batch_size=cfg.batch_size, batch_format="numpy", drop_last=True,
                                    local_shuffle_buffer_size=4 * cfg.batch_size, local_shuffle_seed=cfg.seed + rank):
        x = to_input(batch["aligned"], device=device)
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
def _copy_checkpoint(checkpoint: Checkpoint, out: str) -> None:
    target = resolve(out)
    with checkpoint.as_directory() as directory:
        for name in os.listdir(directory):
            with open(os.path.join(directory, name), "rb") as f:
                target.join(name).write_bytes(f.read())


def verify(backbone: nn.Module, cfg: FRTrainConfig) -> dict:
    """TAR at FAR on the held-out identities, aligned views."""
    data = cfg.data.model_copy(update={"misaligned_view": False})
    batches = face_pipeline(data, "val").dataset.iter_batches(batch_size=256, batch_format="numpy")
    embeddings, subjects, _ = embed_batches(backbone, batches)
    report = verification_report(embeddings, subjects)
    report["identities"] = int(len(set(subjects)))
    return report


def run_fr_train(cfg: FRTrainConfig) -> dict:
    ensure_ray()
    classes = training_classes(cfg)
    if len(classes) < 2:
        raise ValueError(f"need at least 2 training identities with subject_id, found {len(classes)}")
    data = cfg.data.model_copy(update={"misaligned_view": False})
    units = plan_units(data)
    pipeline = face_pipeline(data, "train", epochs=cfg.epochs, units=units)
    train_rows = pipeline.rows_per_epoch * (1.0 - data.val_fraction) * cfg.epochs
    total_steps = max(int(train_rows // (cfg.batch_size * cfg.workers)), 1)
    out = resolve(cfg.out)
    run_root = out.parent().join("_ray_runs")
    run_root.makedirs()
    trainer = TorchTrainer(
        fr_train_loop,
        train_loop_config={"cfg": cfg.model_dump(), "classes": classes, "total_steps": total_steps},
        scaling_config=ScalingConfig(num_workers=cfg.workers, use_gpu=cfg.use_gpu,
                                     resources_per_worker={"CPU": cfg.cpus_per_worker}),
        run_config=RunConfig(name=f"fr-train-{os.path.basename(out.path)}", storage_path=run_root.path,
                             storage_filesystem=run_root.fs),
        datasets={"train": pipeline.dataset},
    )
    result = trainer.fit()
    _copy_checkpoint(result.checkpoint, cfg.out)

    trained, _ = load_model(cfg.out)
    torch.set_num_threads(max(os.cpu_count() or 1, 1))
    untrained, _ = build_models(cfg, len(classes))
    summary = {
        "out": out.uri,
        "classes": len(classes),
        "train": {k: v for k, v in result.metrics.items() if isinstance(v, (int, float))},
        "rejected": len(pipeline.rejects()),
        "verification": verify(trained, cfg),
        "verification_untrained": verify(untrained, cfg),
    }
    out.join("fr_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def class_centres(uri: str) -> tuple[torch.Tensor, list[str]]:
    """The margin head's centres and class names saved by fr-train (for CR-FIQA)."""
    from aikd.models.weights import read_card

    _, extra = read_tensors(uri)
    if CENTRES not in extra:
        raise ValueError(f"{resolve(uri).join(WEIGHTS_FILE).uri} holds no class centres: not made by fr-train")
    return extra[CENTRES], list(read_card(uri).lineage.get("classes", []))
